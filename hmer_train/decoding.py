"""PyTorch decoding through ``model.step`` with the shared search of :mod:`hmer_runtime.decoding.search`.

The cache makes every step cost the same whatever the prefix length; nothing re-runs the prefix.
``rescore_r2l`` adds CoMER's bidirectional rescoring for models trained in both directions.
:class:`TorchDecoder` puts a model behind the same ``decode(images, mask, options)`` as the
runtime's ``OnnxModel``, with the options a checkpoint's config gives (``hmer_train.config.reading``).
"""

from __future__ import annotations

import numpy as np
import torch

from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.decoding.driver import generate, rescore_right_to_left
from hmer_runtime.decoding.search import Constraint, Hypothesis, teacher_forced_inputs
from hmer_runtime.engine.batch_encoding import encode_each, image_sizes
from hmer_runtime.text.grammar import LatexGrammar
from hmer_runtime.text.vocab import Vocab
from hmer_train.models.base import HMERModel, expand_memory, reorder_state


class TorchDecoder:
    """A PyTorch model behind the runtime's ``decode(images, mask, options)`` (``OnnxModel``'s),
    so evaluation, benchmarks and the export check decode both sides through one call: the
    shared driver (``hmer_runtime.decoding.driver.generate``) over :class:`TorchBackend`."""

    def __init__(self, model: HMERModel, vocab: Vocab):
        self.model, self.vocab = model, vocab
        self.grammar = LatexGrammar(vocab)

    @torch.no_grad()
    def decode(self, images, mask, options: DecodeOptions, keep_attention: bool = False) -> list[list[Hypothesis]]:
        """Hypotheses per image, best first, decoded as ``options`` say (a checkpoint's own come
        from ``hmer_train.config.reading``); ``images``/``mask`` as numpy arrays or tensors."""
        self.model.eval()
        device = next(self.model.parameters()).device
        x, m = (torch.as_tensor(a).to(device) for a in (images, mask))
        return generate(TorchBackend(self.model), x, m, options, self.vocab.sos_id, self.vocab.eos_id,
                        self.grammar if options.grammar else None, keep_attention)


class TorchBackend:
    """A PyTorch model's step with its cache, for the shared decode driver."""

    def __init__(self, model: HMERModel):
        self.model = model
        self.shares_memory = model.decoder.shares_memory

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[dict, dict]:
        memory = encode_each_image(self.model, images, mask)
        return memory, self.model.init_state(memory)

    def gather(self, tree: dict, index: np.ndarray) -> dict:
        rows = torch.from_numpy(np.asarray(index, dtype=np.int64)).to(tree[next(iter(tree))].device)
        return {k: v.index_select(0, rows) for k, v in tree.items()}

    def search_steps(self, memory: dict, state: dict, rows: int, per_image: int):
        """When the search drops finished images, the memory follows them."""
        model, held = self.model, {"memory": memory, "rows": rows}
        device = memory["mask"].device

        def step(tokens: np.ndarray, st):
            logits, attn, st = model.step(torch.from_numpy(tokens).to(device), st, held["memory"])
            return logits.float().cpu().numpy(), attn.float().cpu().numpy(), st

        def reorder(st, rows: np.ndarray):
            index = torch.from_numpy(rows).to(device)
            if len(rows) != held["rows"]:  # rows within an image share its memory: only a shrink gathers
                # the search keeps whole images (per_image rows each), so an image's first row names it
                keep = index[::per_image] // per_image if self.shares_memory else index
                held["memory"], held["rows"] = expand_memory(held["memory"], keep), len(rows)
            return reorder_state(st, index)

        return step, reorder, state

    def sequence_logprob(self, memory, state, images, sequences, start, end) -> list[float]:
        return memory_logprob(self.model, self.gather(memory, images), sequences, start, end)


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
    """Hypotheses per image, best first (one each for greedy), without right-to-left rescoring;
    ``constraint`` restricts the tokens each step may choose. The shared driver decodes."""
    model.eval()
    options = DecodeOptions(beam=max(1, beam), max_len=max_len, length_penalty=length_penalty,
                            grammar=constraint is not None, rescore=False, search=search)
    return generate(TorchBackend(model), images, mask, options, sos, eos, constraint, keep_attention)


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
    """Re-rank each image's beam by the mean of its left-to-right and right-to-left log-probs
    (the driver's ``rescore_right_to_left`` over the images, encoded once each)."""
    backend = TorchBackend(model)
    memory, state = backend.encode(images, mask)
    return rescore_right_to_left(backend, memory, state, hyps, length_penalty, sos, eos)
