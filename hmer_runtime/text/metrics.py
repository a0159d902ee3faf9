"""Recognition metrics, one implementation for every evaluation path.

* ExpRate: share of expressions whose token sequence is exactly right; ``<=1`` / ``<=2``: within
  one / two token edits (the CROHME "structure-tolerant" columns).
* WER: token edit distance summed over the set, divided by the summed reference length
  (what the reference WAP project reports as WER).
* Per-length buckets of ExpRate, since long expressions are much harder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rapidfuzz.distance import Levenshtein

LENGTH_BUCKETS = ((1, 10), (11, 20), (21, 30), (31, 50), (51, 10_000))


def length_bucket(n_tokens: int) -> str:
    """The LENGTH_BUCKETS label of an expression of ``n_tokens`` reference tokens: ``"11-20"``, ``"51+"``."""
    lo, hi = next(b for b in LENGTH_BUCKETS if n_tokens <= b[1])  # an empty reference counts as short
    return f"{lo}-{hi}" if hi < 10_000 else f"{lo}+"


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two token sequences."""
    return Levenshtein.distance(ref, hyp)


@dataclass
class Metrics:
    """Accumulates (reference, hypothesis) pairs; ``summary()`` gives the rates."""

    n: int = 0
    exact: int = 0
    within1: int = 0
    within2: int = 0
    edits: int = 0
    ref_tokens: int = 0
    buckets: dict[str, list[int]] = field(default_factory=dict)

    def add(self, ref: list[str], hyp: list[str]) -> int:
        d = edit_distance(ref, hyp)
        self.n += 1
        self.exact += d == 0
        self.within1 += d <= 1
        self.within2 += d <= 2
        self.edits += d
        self.ref_tokens += len(ref)
        b = self.buckets.setdefault(length_bucket(len(ref)), [0, 0])
        b[0] += 1
        b[1] += d == 0
        return d

    def summary(self) -> dict:
        """Rates in percent (ExpRate, <=1, <=2, WER) plus counts and per-length ExpRate."""
        pct = (lambda k: 100.0 * k / self.n) if self.n else (lambda k: 0.0)
        return {
            "n": self.n,
            "exprate": pct(self.exact),
            "le1": pct(self.within1),
            "le2": pct(self.within2),
            "wer": 100.0 * self.edits / self.ref_tokens if self.ref_tokens else 0.0,
            "by_length": {k: {"n": n, "exprate": 100.0 * e / n} for k, (n, e) in self.buckets.items()},
        }


def format_summary(s: dict) -> str:
    """One line: ``ExpRate 41.2 | <=1 55.0 | <=2 63.1 | WER 12.3 | n 986``."""
    return (f"ExpRate {s['exprate']:.2f} | <=1 {s['le1']:.2f} | <=2 {s['le2']:.2f} | "
            f"WER {s['wer']:.2f} | n {s['n']}")
