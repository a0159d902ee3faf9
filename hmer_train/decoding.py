"""PyTorch decoding through ``model.step`` with the shared search of :mod:`hmer_runtime.decoding.search`.

The cache makes every step cost the same whatever the prefix length; nothing re-runs the prefix.
``rescore_r2l`` adds CoMER's bidirectional rescoring for models trained in both directions.
:class:`TorchDecoder` puts a model behind the same ``decode(images, mask, options)`` as the
runtime's ``OnnxModel``, with the options a checkpoint's config gives (:func:`options_from_config`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.decoding.search import (
    Constraint,
    Hypothesis,
    beam_search,
    bidirectional_search,
    combine_r2l,
    greedy,
    teacher_forced_inputs,
)
from hmer_runtime.engine.batch_encoding import encode_each, image_sizes
from hmer_runtime.text.grammar import LatexGrammar
from hmer_runtime.text.vocab import Vocab
from hmer_train.config import Config
from hmer_train.models.base import HMERModel, expand_memory, reorder_state


def options_from_config(cfg: Config) -> DecodeOptions:
    """How a checkpoint decodes: its config's ``decode`` section. Right-to-left rescoring needs a
    transformer decoder trained in both reading directions."""
    rescore = cfg.decode.rescore and cfg.train.bidirectional and cfg.model.decoder.get("type", "comer") == "comer"
    return replace(cfg.decode, rescore=rescore)


class TorchDecoder:
    """A PyTorch model behind the runtime's ``decode(images, mask, options)`` (``OnnxModel``'s),
    so evaluation, benchmarks and the export check decode both sides through one call."""

    def __init__(self, model: HMERModel, vocab: Vocab, options: DecodeOptions):
        self.model, self.vocab, self.options = model, vocab, options
        self.grammar = LatexGrammar(vocab)

    @torch.no_grad()
    def decode(self, images, mask, options: DecodeOptions | None = None,
               keep_attention: bool = False) -> list[list[Hypothesis]]:
        """Hypotheses per image, best first; ``images``/``mask`` as numpy arrays or tensors."""
        opts = options or self.options
        device = next(self.model.parameters()).device
        x, m = (torch.as_tensor(a).to(device) for a in (images, mask))
        sos, eos = self.vocab.sos_id, self.vocab.eos_id
        hyps = decode(self.model, x, m, sos, eos, opts.beam, opts.max_len, opts.length_penalty, keep_attention,
                      constraint=self.grammar if opts.grammar else None, search=opts.search)
        return rescore_r2l(self.model, x, m, hyps, sos, eos, opts.length_penalty) if opts.rescores else hyps


def encode_each_image(model: HMERModel, images: torch.Tensor, mask: torch.Tensor) -> dict:
    """``model.encode`` with each image at its own size, as the runtime encodes (``batch_encoding``):
    a padded batch reads every image as it reads alone."""
    return encode_each(model.encode, images, mask, image_sizes(mask.cpu().numpy()), model.input_multiple,
                       model.decoder.layout(), lambda shape, like: like.new_zeros(shape))


@torch.no_grad()
def decode(model: HMERModel, images: torch.Tensor, mask: torch.Tensor, sos: int, eos: int,
           beam: int = 1, max_len: int = 200, length_penalty: float = 1.0,
           keep_attention: bool = False, constraint: Constraint | None = None,
           search: str = "hmer") -> list[list[Hypothesis]]:
    """Hypotheses per image, best first (one each for greedy); ``constraint`` restricts the tokens
    each step may choose (see :class:`hmer_runtime.text.grammar.LatexGrammar`). ``search="comer"`` is
    CoMER's bidirectional beam search (any beam, 1 included; the constraint holds its left-to-right
    beams and filters its endings; see ``search.bidirectional_search``)."""
    model.eval()
    memory = encode_each_image(model, images, mask)
    n = images.shape[0]
    if search == "comer":
        return _bidirectional(model, memory, n, sos, eos, max(1, beam), max_len, length_penalty, constraint)
    rows = torch.arange(n, device=images.device).repeat_interleave(max(1, beam))
    state = reorder_state(model.init_state(memory), rows)
    if not model.decoder.shares_memory:
        memory = expand_memory(memory, rows)
    step, reorder = _search_steps(model, memory, len(rows), max(1, beam))
    if beam <= 1:
        return [[h] for h in greedy(step, state, n, sos, eos, max_len, keep_attention=keep_attention,
                                    constraint=constraint, reorder=reorder)]
    return beam_search(step, reorder, state, n, beam, sos, eos, max_len, length_penalty=length_penalty,
                       keep_attention=keep_attention, constraint=constraint)


def _search_steps(model: HMERModel, memory: dict, rows: int, per_image: int):
    """(step, reorder) for the shared search (``hmer_runtime.decoding.search``) over ``model.step`` for
    ``rows`` hypotheses, ``per_image`` per image, with ``memory`` (one row per image where the
    decoder ``shares_memory``, else one per hypothesis); when the search drops finished images,
    memory follows."""
    held = {"memory": memory, "rows": rows}
    shared = model.decoder.shares_memory
    device = memory["mask"].device

    def step(tokens: np.ndarray, st):
        logits, attn, st = model.step(torch.from_numpy(tokens).to(device), st, held["memory"])
        return logits.float().cpu().numpy(), attn.float().cpu().numpy(), st

    def reorder(st, rows: np.ndarray):
        index = torch.from_numpy(rows).to(device)
        if len(rows) != held["rows"]:  # rows within an image share its memory: only a shrink gathers
            # the search keeps whole images (per_image rows each), so an image's first row names it
            keep = index[::per_image] // per_image if shared else index
            held["memory"], held["rows"] = expand_memory(held["memory"], keep), len(rows)
        return reorder_state(st, index)

    return step, reorder


def _bidirectional(model: HMERModel, memory: dict, n: int, sos: int, eos: int, beam: int, max_len: int,
                   length_penalty: float, constraint: Constraint | None) -> list[list[Hypothesis]]:
    device = memory["mask"].device
    images = torch.arange(n, device=device).repeat(2)  # the readings of each direction, image-major
    rows = images.repeat_interleave(beam)
    state = reorder_state(model.init_state(memory), rows)
    beams = expand_memory(memory, images if model.decoder.shares_memory else rows)
    step, reorder = _search_steps(model, beams, len(rows), beam)

    def rate(images: list[int], sequences: list[list[int]], start: int, end: int) -> list[float]:
        return memory_logprob(model, expand_memory(memory, torch.tensor(images, device=device)), sequences,
                              start, end)

    return bidirectional_search(step, reorder, state, n, beam, sos, eos, max_len, length_penalty, rate, constraint)


@torch.no_grad()
def memory_logprob(model: HMERModel, memory: dict, sequences: list[list[int]], start: int, end: int) -> list[float]:
    """log P(sequence + end | memory row, start) by teacher forcing on already encoded images,
    one memory row per sequence."""
    if not sequences:
        return []
    device = memory["mask"].device
    inputs, targets = (torch.from_numpy(a).to(device) for a in teacher_forced_inputs(sequences, start, end))
    return model.decoder.logprob(inputs, targets, memory).tolist()


@torch.no_grad()
def rescore_r2l(model: HMERModel, images: torch.Tensor, mask: torch.Tensor,
                hyps: list[list[Hypothesis]], sos: int, eos: int,
                length_penalty: float = 1.0) -> list[list[Hypothesis]]:
    """Re-rank each image's beam by the mean of its left-to-right and right-to-left log-probs.

    Right-to-left sequences start with ``eos`` and end with ``sos`` (how bidirectional training
    lays them out).
    """
    index = torch.tensor([i for i, hs in enumerate(hyps) for _ in hs], device=images.device)
    seqs = [h.ids[::-1] for hs in hyps for h in hs]
    # each image encoded once, its memory shared by its hypotheses
    memory = expand_memory(encode_each_image(model, images, mask), index)
    return combine_r2l(hyps, memory_logprob(model, memory, seqs, start=eos, end=sos), length_penalty)
