"""Write the project's own sample expressions (pen strokes composed from hand-made glyph curves).

    python examples/make_samples.py

Outputs ``examples/strokes/*.json`` (the online signal, as a drawing pad sends it), PNG renders
in ``examples/`` and ``hmer_runtime/samples/`` (the bundled benchmark inputs), and a photo-like
``examples/photo.png`` (the ink on uneven, noisy, tinted paper with wide margins). Nothing here
comes from CROHME.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from hmer_bench.robustness import photo
from hmer_runtime.inputs.inkml import Ink
from hmer_runtime.inputs.render import RenderConfig, render_ink

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def arc(cx, cy, rx, ry, a0, a1, n=24):
    t = np.radians(np.linspace(a0, a1, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def line(*pts, n=10):
    out = []
    for a, b in zip(pts, pts[1:]):
        for t in np.linspace(0, 1, n, endpoint=False):
            out.append((a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])))
    out.append(pts[-1])
    return np.array(out, dtype=float)


# Glyphs in a unit box: x right, y down, baseline at y = 1, x-height from y = 0.4.
GLYPHS = {
    "0": lambda: [arc(0.45, 0.5, 0.35, 0.5, -90, 270)],
    "1": lambda: [line((0.25, 0.2), (0.5, 0.0), (0.5, 1.0))],
    "2": lambda: [np.concatenate([arc(0.45, 0.3, 0.33, 0.3, 200, 370), line((0.78, 0.35), (0.1, 1.0), (0.85, 1.0))])],
    "3": lambda: [np.concatenate([arc(0.42, 0.27, 0.3, 0.25, 210, 450), arc(0.42, 0.74, 0.34, 0.26, 270, 510)])],
    "x": lambda: [line((0.1, 0.4), (0.8, 1.0)), line((0.8, 0.4), (0.1, 1.0))],
    "y": lambda: [line((0.1, 0.4), (0.45, 0.95)), line((0.8, 0.4), (0.35, 1.4))],
    "a": lambda: [np.concatenate([arc(0.4, 0.7, 0.3, 0.3, -20, 340), line((0.7, 0.55), (0.72, 1.0))])],
    "b": lambda: [np.concatenate([line((0.15, 0.0), (0.15, 1.0)), arc(0.45, 0.7, 0.3, 0.3, 180, -180)])],
    "c": lambda: [arc(0.5, 0.7, 0.35, 0.3, -40, -320)],
    "+": lambda: [line((0.1, 0.6), (0.9, 0.6)), line((0.5, 0.2), (0.5, 1.0))],
    "-": lambda: [line((0.1, 0.65), (0.9, 0.65))],
    "=": lambda: [line((0.1, 0.5), (0.9, 0.5)), line((0.1, 0.8), (0.9, 0.8))],
}

# Expressions as (glyph, x, y, scale) placements, with their LaTeX.
SAMPLES = {
    "x2": (r"x ^ { 2 } + 2 x + 1", [("x", 0, 0, 1), ("2", 0.95, -0.55, 0.55), ("+", 1.7, 0, 1), ("2", 2.8, 0, 1),
                                   ("x", 3.8, 0, 1), ("+", 4.9, 0, 1), ("1", 6.0, 0, 1)]),
    "abc": (r"a + b = c", [("a", 0, 0, 1), ("+", 1.2, 0, 1), ("b", 2.4, 0, 1), ("=", 3.6, 0, 1), ("c", 4.8, 0, 1)]),
    "y2x": (r"y = 2 x - 3", [("y", 0, 0, 1), ("=", 1.2, 0, 1), ("2", 2.4, 0, 1), ("x", 3.4, 0, 1),
                             ("-", 4.5, 0, 1), ("3", 5.7, 0, 1)]),
    "frac": (r"\frac { a } { b }", [("a", 0.3, -0.2, 1), ("-", 0.0, 0.0, 1.5), ("b", 0.3, 1.15, 1)]),
}


def strokes_of(placements, unit=60.0, seed=0) -> list[list[list[float]]]:
    """Pen strokes in pad pixels, with a little wobble so they look written, not drawn by a ruler."""
    rng = np.random.default_rng(seed)
    strokes = []
    for glyph, x, y, s in placements:
        for st in GLYPHS[glyph]():
            pts = st * s + np.array([x, y])
            pts = pts + rng.normal(0, 0.012, pts.shape).cumsum(0) * 0.5
            strokes.append((pts * unit).round(1).tolist())
    return strokes


def main() -> None:
    (HERE / "strokes").mkdir(exist_ok=True)
    bundled = ROOT / "hmer_runtime" / "samples"
    bundled.mkdir(exist_ok=True)
    cfg = RenderConfig(symbol_px=32, line_width=3)
    for i, (name, (latex, placements)) in enumerate(SAMPLES.items()):
        strokes = strokes_of(placements, seed=i)
        (HERE / "strokes" / f"{name}.json").write_text(json.dumps({"latex": latex, "strokes": strokes}) + "\n")
        img = render_ink(Ink.from_strokes(strokes), cfg)
        Image.fromarray(img).save(bundled / f"{name}.png", optimize=True)
        if name == "x2":
            Image.fromarray(img).save(HERE / "sample.png", optimize=True)
            photo(img).save(HERE / "photo.jpg", quality=85)


if __name__ == "__main__":
    main()
