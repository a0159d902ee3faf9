"""CoMER's ending rule, followed exactly (its scorer, after Hugging Face's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hmer_runtime.decoding.hypothesis import Hypothesis


class _NBest:
    """The best ``k`` finished hypotheses as CoMER keeps them: a new one enters while fewer than k
    are held or when it beats the worst, which then leaves."""

    def __init__(self, k: int):
        self.k, self.items, self.worst = k, [], 1e9

    def add(self, hyp: Hypothesis) -> None:
        if len(self.items) < self.k or hyp.score > self.worst:
            self.items.append(hyp)
            if len(self.items) > self.k:
                ranked = sorted(range(len(self.items)), key=lambda j: self.items[j].score)
                self.worst = self.items[ranked[1]].score
                del self.items[ranked[0]]
            else:
                self.worst = min(hyp.score, self.worst)


class ComerEndings:
    """An ending candidate counts only if it ranks in the first ``beam``; the best ``beam``
    endings are kept; an image stops when its worst kept ending beats the best live beam's
    log-probability over the current length; at most ``max_len - 1`` tokens, after which live
    beams end as they are."""

    def __init__(self, images: int, beam: int, length_penalty: float, max_len: int):
        self.k, self.lp, self.steps = beam, length_penalty, max_len - 1
        self.kept = [_NBest(beam) for _ in range(images)]

    def counts(self, rank: int, forced: bool) -> bool:
        return rank < self.k

    def forced(self, t: int) -> bool:
        return False

    def add(self, image: int, hyp: Hypothesis) -> None:
        self.kept[image].add(hyp)

    def enough(self, image: int) -> bool:
        return True

    def going(self, image: int, live_scores: np.ndarray, filled: int, t: int) -> bool:
        kept = self.kept[image]
        return not (len(kept.items) >= self.k and kept.worst >= live_scores.max() / (t + 1) ** self.lp)

    def out_of_length(self, image: int, live: list[Hypothesis]) -> None:
        for hyp in live:
            self.kept[image].add(hyp)

    def results(self, image: int) -> list[Hypothesis]:
        return self.kept[image].items
