"""The reading of an input decoded at several sizes (``DecodeOptions.scales``).

Each view is decoded on its own (:func:`view_options`: the model's own size at the full beam,
the others at ``side_beam``); their hypotheses are pooled and the best score wins, so a view
whose size suits the handwriting better gives the reading. Scores are length-normalised
log-probabilities (rescored ones where the beam was rescored), comparable across views of one
input. Every backend's caller chooses each view's options with :func:`view_options` and pools
through :func:`pool`.
"""

from __future__ import annotations

import math
from dataclasses import replace

from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.decoding.hypothesis import Hypothesis


def own_size(scales: tuple[float, ...]) -> int:
    """The view read at the model's own size: the scale nearest 1 (by ratio), the first on a tie."""
    return min(range(len(scales)), key=lambda v: abs(math.log(scales[v])))


def view_options(options: DecodeOptions, views: int) -> list[DecodeOptions]:
    """The options each of an input's ``views`` views is decoded with, in ``options.scales``
    order: the model's own size (:func:`own_size`) at ``options.beam``, the other sizes at
    ``options.side_beam`` (never wider). A single view is read at the full beam."""
    if views == 1:
        return [options]
    if views != len(options.scales):
        raise ValueError(f"an input has {views} views, but the options read {len(options.scales)} sizes")
    side = options.with_overrides(beam=min(options.beam, options.side_beam or options.beam))
    own = own_size(options.scales)
    return [options if v == own else side for v in range(views)]


def pool(views: list[list[Hypothesis]]) -> list[Hypothesis]:
    """One input's hypotheses from each of its views (in ``scales`` order), best score first;
    each is marked with the ``view`` it came from, and ties go to the earlier view."""
    pooled = [replace(h, view=v) for v, hs in enumerate(views) for h in hs]
    return sorted(pooled, key=lambda h: -h.score if not math.isnan(h.score) else math.inf)

