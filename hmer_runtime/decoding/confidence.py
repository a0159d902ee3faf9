"""How likely a reading is exactly right, from what the search knows about it.

A sequence's own log-probability ranks readings poorly across expressions (long ones score low
even when right). The search knows more: how much of the beam's probability the best reading
holds, whether each reading direction alone ranks it first, how many of its tokens were close
calls, and, for an input read at several sizes, how many of them agree.
:func:`features` collects them per image; :class:`Calibration` (fitted on validation data,
stored in ``model.json`` under ``confidence``) maps them to a probability with a logistic model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hmer_runtime.decoding.search import Hypothesis

#: The features, in the order :func:`features` returns them and ``weights`` applies to them.
FEATURES = ("score", "beam_share", "left_to_right_agrees", "right_to_left_agrees", "log_length",
            "uncertain_tokens", "scales_agree")
#: A token chosen with less probability than this counts as uncertain.
UNCERTAIN = 0.9


def features(hyps: list[Hypothesis]) -> list[float]:
    """The features of ``hyps[0]``, the best reading of one image, among its rivals ``hyps[1:]``
    (of its own view, where views were pooled): its length-normalised score; the log-odds of its
    share of the beam's probability mass; whether the left-to-right and the right-to-left readings
    alone would rank it first (among the rivals read that way); the log of its length; how many of
    its tokens were chosen with less than :data:`UNCERTAIN` probability; and the fraction of the
    views whose best reading it is (``decoding.pooling``; 1 for one view)."""
    best = hyps[0]
    if not math.isfinite(best.score):
        return [-50.0, -14.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    tops = {}  # each view's best reading: its first in the pooled order
    for h in hyps:
        tops.setdefault(h.view, h.ids)
    agree = sum(ids == best.ids for ids in tops.values()) / len(tops)
    hyps = [h for h in hyps if h.view == best.view]
    n = len(best.ids) + 1  # with the end token
    total = np.array([h.logprob for h in hyps if math.isfinite(h.logprob)], dtype=np.float64)
    share = float(np.exp(best.logprob - np.logaddexp.reduce(total))) if len(total) else 1.0
    share = min(max(share, 1e-6), 1 - 1e-6)

    def ranks_first(key) -> float:
        if key(best) is None:
            return 1.0  # not rescored: one reading direction, which ranked it first
        read = [j for j, h in enumerate(hyps) if key(h) is not None]  # rescoring may leave rivals unread
        return float(max(read, key=lambda j: key(hyps[j]) / (len(hyps[j].ids) + 1)) == 0)

    uncertain = sum(lp < math.log(UNCERTAIN) for lp in best.token_logprobs)
    return [best.score, math.log(share / (1 - share)), ranks_first(lambda h: h.l2r), ranks_first(lambda h: h.r2l),
            math.log(n), float(uncertain), agree]


@dataclass(frozen=True)
class Calibration:
    """A logistic model of P(the reading is exactly right | features)."""

    weights: tuple[float, ...]
    bias: float
    fitted_on: str = ""

    def probability(self, feats: list[float]) -> float:
        z = self.bias + sum(w * f for w, f in zip(self.weights, feats))
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "weights": list(self.weights), "bias": self.bias,
                "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, d: dict) -> Calibration | None:
        """The calibration in ``d``; None when it was fitted on other features (another version
        of hmer computes them), so that the model still loads, without a confidence."""
        if list(d.get("features", [])) != list(FEATURES):
            return None
        weights = tuple(float(w) for w in d["weights"])
        bias = float(d["bias"])
        if len(weights) != len(FEATURES) or not all(math.isfinite(w) for w in (*weights, bias)):
            raise ValueError("confidence weights must be one finite number per feature")
        return cls(weights, bias, str(d.get("fitted_on", "")))


def fit(x: np.ndarray, right: np.ndarray, l2: float = 1e-2, iterations: int = 50) -> tuple[np.ndarray, float]:
    """Logistic regression by Newton's method: (weights, bias) for features ``x`` (n, d) and
    whether each reading was right (n,); features are standardised inside, with a little L2."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(right, dtype=np.float64)
    mean, std = x.mean(0), x.std(0) + 1e-9
    z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    ridge = l2 * np.eye(z.shape[1])
    ridge[-1, -1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -50, 50)))
        grad = z.T @ (p - y) + ridge @ w
        hess = (z * (p * (1 - p))[:, None]).T @ z + ridge
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    weights = w[:-1] / std
    return weights, float(w[-1] - (weights * mean).sum())


def expected_calibration_error(probability: np.ndarray, right: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by their sizes."""
    p, y = np.asarray(probability, dtype=np.float64), np.asarray(right, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(y[which == b].mean() - p[which == b].mean()) * (which == b).sum()
                     for b in range(bins) if (which == b).any()) / max(1, len(p)))
