"""The reading of an input decoded at several sizes (``DecodeOptions.scales``).

Each view is decoded on its own; their hypotheses are pooled and the best score wins, so a
view whose size suits the handwriting better gives the reading. Scores are length-normalised
log-probabilities (rescored ones where the beam was rescored), comparable across views of one
input. Every backend's caller pools through :func:`pool`.
"""

from __future__ import annotations

import math
from dataclasses import replace

from hmer_runtime.decoding.hypothesis import Hypothesis


def pool(views: list[list[Hypothesis]]) -> list[Hypothesis]:
    """One input's hypotheses from each of its views (in ``scales`` order), best score first;
    each is marked with the ``view`` it came from, and ties go to the earlier view."""
    pooled = [replace(h, view=v) for v, hs in enumerate(views) for h in hs]
    return sorted(pooled, key=lambda h: -h.score if not math.isnan(h.score) else math.inf)

