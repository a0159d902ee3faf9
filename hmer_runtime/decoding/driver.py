"""The decode driver, written once for every backend: ``generate(backend, images, mask, options)``.

A backend (the ONNX Runtime ``OnnxModel``, PyTorch's ``TorchBackend``) supplies only what
depends on how it computes: encoding, gathering rows, a search step with its cached state, and
the log-probability of whole sequences. The driver chooses the search, lays the beams out, runs
greedy, beam or CoMER's search from :mod:`hmer_runtime.decoding.search`, and rescores right to
left, the same way for all of them.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.decoding.search import (
    Constraint,
    Hypothesis,
    ReorderFn,
    StepFn,
    beam_search,
    bidirectional_search,
    combine_r2l,
    contenders,
    greedy,
)


class StepBackend(Protocol):
    """What a model supplies to the driver. Trees are dicts of named arrays, one row each."""

    #: The step takes memory with one row per image, shared by its hypotheses.
    shares_memory: bool

    def encode(self, images: Any, mask: Any) -> tuple[dict, dict]:
        """(memory, initial state) of a padded batch, one row per image."""

    def gather(self, tree: dict, index: np.ndarray) -> dict:
        """The rows ``index`` of every array of ``tree``."""

    def search_steps(self, memory: dict, state: dict, rows: int, per_image: int) -> tuple[StepFn, ReorderFn, Any]:
        """(step, reorder, the search's initial state) over ``rows`` hypotheses, ``per_image`` per
        image, whose memory (per image or per hypothesis) and initial state are given."""

    def sequence_logprob(self, memory: dict, state: dict, images: np.ndarray, sequences: list[list[int]],
                         start: int, end: int) -> list[float]:
        """log P(sequence + end | image, start) for each sequence; ``memory`` and ``state`` hold one
        row per image, ``images`` the image of each sequence."""


def generate(backend: StepBackend, images: Any, mask: Any, options: DecodeOptions, sos: int, eos: int,
             constraint: Constraint | None = None, keep_attention: bool = False) -> list[list[Hypothesis]]:
    """Hypotheses per image, best first, decoded as ``options`` say; ``constraint`` (the grammar)
    holds each step to the tokens it allows."""
    memory, state = backend.encode(images, mask)
    n, beam = len(next(iter(state.values()))), max(1, options.beam)
    if options.search == "comer":
        return _bidirectional(backend, memory, state, n, beam, options, sos, eos, constraint)
    rows = np.repeat(np.arange(n), beam)
    step, reorder, start = backend.search_steps(memory if backend.shares_memory else backend.gather(memory, rows),
                                                backend.gather(state, rows), n * beam, beam)
    if beam == 1:
        return [[h] for h in greedy(step, start, n, sos, eos, options.max_len, keep_attention=keep_attention,
                                    constraint=constraint, reorder=reorder)]
    hyps = beam_search(step, reorder, start, n, beam, sos, eos, options.max_len,
                       length_penalty=options.length_penalty, keep_attention=keep_attention, constraint=constraint)
    return rescore_right_to_left(backend, memory, state, hyps, options.length_penalty, sos, eos, options.n_best) \
        if options.rescores else hyps


def rescore_right_to_left(backend: StepBackend, memory: dict, state: dict, hyps: list[list[Hypothesis]],
                          length_penalty: float, sos: int, eos: int, keep: int = 1) -> list[list[Hypothesis]]:
    """CoMER's bidirectional rescoring of each image's beam: hypotheses read right to left (from
    eos to sos) over their image's memory, then ranked by the mean of both readings. The first
    ``keep`` of each beam are read first, then only the rest that could still enter its top
    ``keep`` (``search.contenders``), so the top ``keep`` are those of reading every hypothesis."""
    r2l: list[list[float | None]] = [[None] * len(hs) for hs in hyps]

    def read(which: list[tuple[int, int]]) -> None:  # (image, hypothesis) pairs, one scorer pass
        if not which:
            return
        owners = np.array([i for i, _ in which], dtype=np.int64)
        values = backend.sequence_logprob(memory, state, owners, [hyps[i][j].ids[::-1] for i, j in which],
                                          start=eos, end=sos)
        for (i, j), v in zip(which, values):
            r2l[i][j] = v

    read([(i, j) for i, hs in enumerate(hyps) for j in range(min(keep, len(hs)))])
    read([(i, j) for i, hs in enumerate(hyps) for j in contenders(hs, r2l[i], keep, length_penalty)])
    return combine_r2l(hyps, r2l, length_penalty)


def _bidirectional(backend: StepBackend, memory: dict, state: dict, n: int, beam: int, options: DecodeOptions,
                   sos: int, eos: int, constraint: Constraint | None) -> list[list[Hypothesis]]:
    """CoMER's search: the readings of both directions as 2n images, image-major, ``beam`` rows each."""
    images = np.tile(np.arange(n), 2)
    rows = np.repeat(images, beam)
    step, reorder, start = backend.search_steps(backend.gather(memory, images if backend.shares_memory else rows),
                                                backend.gather(state, rows), len(rows), beam)

    def rate(owners: list[int], sequences: list[list[int]], first: int, last: int) -> list[float]:
        return backend.sequence_logprob(memory, state, np.asarray(owners, dtype=np.int64), sequences, first, last)

    return bidirectional_search(step, reorder, start, n, beam, sos, eos, options.max_len, options.length_penalty,
                                rate, constraint)
