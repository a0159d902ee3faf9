"""A second way of drawing ink, for measurement only (never used in training).

hmer renders ink with its own pen (``hmer_runtime.inputs.render``: a round pen of one width,
antialiased by supersampling, black on white, the model's symbol size). A user's image comes
from some other program, so :func:`draw` draws the same ink the way a drawing program might:
matplotlib's Agg rasteriser, a pen whose width follows the writing speed (wider where the hand
slows, as a felt tip or a pressure-sensitive brush), dark blue ink on off-white, slightly uneven
paper, at 1.4 to 2 times the model's symbol size, saved as JPEG. ``python -m
benchmarks.robustness --only "second renderer"`` reads CROHME through it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from hmer_runtime.errors import InputError
from hmer_runtime.inputs.inkml import Ink
from hmer_runtime.inputs.render import symbol_size


def draw(ink: Ink, seed: int = 0, symbol_px: tuple[float, float] = (34.0, 48.0), margin: int = 40) -> Image.Image:
    """``ink`` drawn by matplotlib with a speed-dependent pen on paper, as an RGB JPEG image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    rng = np.random.default_rng(seed)
    traces = [np.asarray(t[:, :2], dtype=np.float64) for t in ink.traces if len(t)]
    if not traces or not np.isfinite(np.concatenate(traces)).all():
        raise InputError(ink.id or "ink", "no finite points to draw")
    size = max(symbol_size(traces), 1e-9)
    scale = rng.uniform(*symbol_px) / size
    lo = np.concatenate(traces).min(axis=0)
    pts = [(t - lo) * scale + margin for t in traces]
    extent = np.concatenate(pts).max(axis=0) + margin
    w, h = int(min(extent[0], 6000)) + 1, int(min(extent[1], 3000)) + 1
    dpi = 100.0
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    paper = np.array([0.97, 0.95, 0.90]) * rng.uniform(0.92, 1.0)
    fig.patch.set_facecolor(paper)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    ink_colour = (0.08, 0.12, 0.35)
    px_per_point = dpi / 72
    base = rng.uniform(0.06, 0.13) * size * scale  # the pen's width in pixels
    for p in pts:
        if len(p) == 1 or np.ptp(p, axis=0).max() < 1e-6:
            ax.plot([p[0, 0]], [p[0, 1]], "o", color=ink_colour, markersize=base / px_per_point, markeredgewidth=0)
            continue
        seg = np.stack([p[:-1], p[1:]], axis=1)
        speed = np.linalg.norm(np.diff(p, axis=0), axis=1)
        speed = np.convolve(speed, np.ones(3) / 3, mode="same")
        slow = 1.0 - speed / max(speed.max(), 1e-9)
        widths = base * (0.7 + 0.6 * slow) / px_per_point
        ax.add_collection(LineCollection(seg, linewidths=widths, colors=[ink_colour], capstyle="round",
                                         joinstyle="round", antialiased=True))
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba(), dtype=np.float32)[..., :3] / 255
    shade = np.linspace(1.0, rng.uniform(0.9, 1.0), rgb.shape[1])[None, :, None]
    rgb = np.clip(rgb * shade + rng.normal(0, 0.015, rgb.shape), 0, 1)
    buf = io.BytesIO()
    Image.fromarray((rgb * 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
    buf.seek(0)
    return Image.open(buf).convert("RGB")
