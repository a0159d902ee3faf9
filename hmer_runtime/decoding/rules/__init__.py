"""The rules a beam search can end hypotheses by, one file each behind :class:`EndingRule`.

The search (``hmer_runtime.decoding.search.beam_search``) expands every live beam each step; a
rule decides which endings count, when an image is done, what happens at the length limit, and
what the image returns:

* ``hmer`` (``hmer.py``): every ending counts; an image stops once ``beam`` readings have ended
  and no live beam can beat the best of them; every beam ends at the length limit.
* ``comer`` (``comer.py``): CoMER's scorer (after Hugging Face's), followed exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from hmer_runtime.decoding.rules.comer import ComerEndings
from hmer_runtime.decoding.rules.hmer import HmerEndings

if TYPE_CHECKING:
    from hmer_runtime.decoding.hypothesis import Hypothesis


class EndingRule(Protocol):
    """Built per search as ``Rule(images, beam, length_penalty, max_len)``."""

    #: Steps the search may take.
    steps: int

    def counts(self, rank: int, forced: bool) -> bool:
        """Whether an ending at this candidate ``rank`` (0 = best) is kept; ``forced``: the beam
        did not end but reached the length limit."""

    def forced(self, t: int) -> bool:
        """Whether every live beam ends at step ``t`` (the length limit)."""

    def add(self, image: int, hyp: Hypothesis) -> None:
        """Keep an ending of ``image``."""

    def enough(self, image: int) -> bool:
        """Whether, with ``beam`` live beams filled, the rest of this step's candidates can be skipped."""

    def going(self, image: int, live_scores: np.ndarray, filled: int, t: int) -> bool:
        """Whether ``image`` decodes on, given its live beams' log-probabilities after step ``t``."""

    def out_of_length(self, image: int, live: list[Hypothesis]) -> None:
        """The search ran out of steps with ``live`` beams of ``image`` still going."""

    def results(self, image: int) -> list[Hypothesis]:
        """The endings ``image`` returns (the search sorts and cuts them to ``beam``)."""


RULES: dict[str, type] = {"hmer": HmerEndings, "comer": ComerEndings}
