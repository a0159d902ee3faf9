"""How likely a reading is exactly right, from what the search knows about it.

A sequence's own log-probability ranks readings poorly across expressions (long ones score low
even when right). The search knows more: how far the best reading is ahead of the next one,
whether the right-to-left reading agrees with the left-to-right one, and the least likely token.
:func:`features` collects them per image; :class:`Calibration` (fitted on validation data,
stored in ``model.json`` under ``confidence``) maps them to a probability with a logistic model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hmer_runtime.decoding.search import Hypothesis

#: The features, in the order :func:`features` returns them and ``weights`` applies to them.
FEATURES = ("score", "margin", "direction_gap", "min_token_logprob", "log_length")
#: The margin given where the search returned a single reading (nothing competes with it).
NO_RIVAL_MARGIN = 5.0


def features(hyps: list[Hypothesis]) -> list[float]:
    """The features of ``hyps[0]``, the best reading of one image, among its rivals ``hyps[1:]``."""
    best = hyps[0]
    if not math.isfinite(best.score):
        return [-50.0, 0.0, 50.0, -50.0, 0.0]
    n = len(best.ids) + 1  # with the end token
    rival = next((h.score for h in hyps[1:] if h.ids != best.ids and math.isfinite(h.score)), None)
    margin = NO_RIVAL_MARGIN if rival is None else min(NO_RIVAL_MARGIN, best.score - rival)
    gap = abs(best.l2r - best.r2l) / n if best.r2l is not None and best.l2r is not None else 0.0
    low = min(best.token_logprobs) if best.token_logprobs else best.score
    return [best.score, margin, min(gap, 50.0), max(low, -50.0), math.log(n)]


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
    def from_dict(cls, d: dict) -> Calibration:
        if list(d.get("features", [])) != list(FEATURES):
            raise ValueError(f"confidence features {d.get('features')} are not {list(FEATURES)}")
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
