"""Synthetic handwriting for tests: simple glyph polylines composed into InkML expressions.

Our own fixtures, so the suite runs on a fresh clone without the (non-redistributable) CROHME data.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

# Glyphs as lists of strokes in a unit box (x right, y down).
GLYPHS: dict[str, list[list[tuple[float, float]]]] = {
    "0": [[(0.5, 0), (0.1, 0.25), (0.1, 0.75), (0.5, 1), (0.9, 0.75), (0.9, 0.25), (0.5, 0)]],
    "1": [[(0.3, 0.2), (0.55, 0), (0.55, 1)]],
    "2": [[(0.1, 0.25), (0.5, 0), (0.9, 0.25), (0.1, 1), (0.9, 1)]],
    "3": [[(0.1, 0.1), (0.8, 0.15), (0.4, 0.5), (0.9, 0.75), (0.1, 0.95)]],
    "4": [[(0.7, 1), (0.7, 0), (0.1, 0.7), (0.9, 0.7)]],
    "7": [[(0.1, 0), (0.9, 0), (0.4, 1)]],
    "x": [[(0.1, 0.3), (0.9, 1)], [(0.9, 0.3), (0.1, 1)]],
    "y": [[(0.1, 0.3), (0.5, 0.8)], [(0.9, 0.3), (0.3, 1.3)]],
    "+": [[(0.1, 0.55), (0.9, 0.55)], [(0.5, 0.15), (0.5, 0.95)]],
    "-": [[(0.1, 0.55), (0.9, 0.55)]],
    "=": [[(0.1, 0.4), (0.9, 0.4)], [(0.1, 0.7), (0.9, 0.7)]],
}


def expression_strokes(symbols: list[str], unit: float = 100.0, jitter: float = 0.0,
                       rng: random.Random | None = None) -> list[np.ndarray]:
    """Strokes writing ``symbols`` left to right, each glyph ``unit`` input units tall."""
    rng = rng or random.Random(0)
    strokes = []
    for i, s in enumerate(symbols):
        for stroke in GLYPHS[s]:
            pts = []
            for a, b in zip(stroke, stroke[1:]):  # densify like a real pen
                for t in np.linspace(0, 1, 8, endpoint=False):
                    pts.append((a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])))
            pts.append(stroke[-1])
            arr = np.array(pts) * unit + np.array([i * 1.2 * unit, 0.0])
            if jitter:
                arr += np.array([[rng.gauss(0, jitter * unit), rng.gauss(0, jitter * unit)]])
            strokes.append(arr)
    return strokes


def inkml_text(strokes: list[np.ndarray], truth: str | None, ui: str = "synthetic") -> str:
    parts = ['<ink xmlns="http://www.w3.org/2003/InkML">',
             '<traceFormat><channel name="X" type="decimal"/><channel name="Y" type="decimal"/></traceFormat>']
    if truth is not None:
        parts.append(f'<annotation type="truth">${truth}$</annotation>')
    parts.append(f'<annotation type="UI">{ui}</annotation>')
    for i, s in enumerate(strokes):
        parts.append(f'<trace id="{i}">' + ", ".join(f"{x:.3f} {y:.3f}" for x, y in s[:, :2]) + "</trace>")
    parts.append("</ink>")
    return "\n".join(parts)


def random_expressions(n: int, seed: int = 0, max_len: int = 5) -> list[list[str]]:
    rng = random.Random(seed)
    alphabet = sorted(GLYPHS)
    return [[rng.choice(alphabet) for _ in range(rng.randint(1, max_len))] for _ in range(n)]


def write_inkml_set(folder: Path, expressions: list[list[str]], unit: float = 100.0,
                    jitter: float = 0.0, seed: int = 0) -> list[Path]:
    """One InkML file per expression in ``folder``; the truth is the symbols joined by spaces."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for i, symbols in enumerate(expressions):
        p = folder / f"expr_{i:03d}.inkml"
        p.write_text(inkml_text(expression_strokes(symbols, unit, jitter, rng), " ".join(symbols), f"expr_{i:03d}"))
        paths.append(p)
    return paths
