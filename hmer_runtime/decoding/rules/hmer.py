"""hmer's ending rule: every ending counts, and an image stops when it cannot improve."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hmer_runtime.decoding.hypothesis import Hypothesis


class HmerEndings:
    """An image stops once ``beam`` readings have ended and no live beam can beat the best of
    them (log-probabilities only fall, so a live beam's best possible score is bounded); at the
    length limit every live beam ends as it is."""

    def __init__(self, images: int, beam: int, length_penalty: float, max_len: int):
        self.k, self.lp, self.max_len, self.steps = beam, length_penalty, max_len, max_len
        self.finished: list[list[Hypothesis]] = [[] for _ in range(images)]

    def counts(self, rank: int, forced: bool) -> bool:
        return True

    def forced(self, t: int) -> bool:
        return t == self.max_len - 1

    def add(self, image: int, hyp: Hypothesis) -> None:
        self.finished[image].append(hyp)

    def enough(self, image: int) -> bool:
        return len(self.finished[image]) >= self.k

    def going(self, image: int, live_scores: np.ndarray, filled: int, t: int) -> bool:
        if len(self.finished[image]) < self.k:
            return filled > 0
        best_live = live_scores.max() / (t + 2) ** self.lp if filled else -np.inf
        return filled > 0 and best_live > max(h.score for h in self.finished[image])

    def out_of_length(self, image: int, live: list[Hypothesis]) -> None:
        pass  # the last step already ended every beam

    def results(self, image: int) -> list[Hypothesis]:
        return self.finished[image]
