"""A decoded reading: what every search returns and every rule keeps."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Hypothesis:
    """A decoded sequence (ids without sos/eos), its log-probability and per-step attention.
    ``token_logprobs``: each id's log-probability as the search chose it (left to right);
    ``l2r`` and ``r2l``: the sequence's log-probability read each way, once rescored (``r2l`` stays
    None for a rival that rescoring showed could not overtake the readings asked for); ``view``:
    which of the input's scales it was read at (``decoding.pooling``)."""

    ids: list[int]
    logprob: float
    score: float
    attention: list[np.ndarray] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    l2r: float | None = None
    r2l: float | None = None
    view: int = 0
