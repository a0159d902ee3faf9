"""Rendering online ink to the offline image the models read.

The convention (the same for training data, ``hmer-run x.inkml`` and the drawing pad):

* **Polarity** -- rendered images are dark ink (0) on a white background (255), like paper.
  :mod:`hmer_runtime.inputs.preprocess` turns any image into model input with ink = 1.0, background = 0.0.
* **Scale** -- CROHME comes from pens whose coordinate ranges differ by orders of magnitude
  (pixels, 1/100 mm, inches). We estimate the writer's symbol size as the median extent
  (max of width, height) of the strokes that are not dots, and scale so that this median is
  ``symbol_px`` pixels. Expressions of any source then have symbols of comparable size.
* **Strokes** -- polylines of ``line_width`` pixels with round joins and caps, antialiased by
  drawing at ``supersample`` times the size and box-filtering down. Dots (zero-length strokes)
  are drawn as discs of the same width. ``pen`` says how the supersampled pen is drawn:
  ``"pil"`` (PIL's wide lines, round joints and end discs; the older models
  were trained on) or ``"capsule"`` (a pixel is ink when its centre lies within ``line_width / 2``
  of a segment, in float64). The capsule pen is exactly specified, so the browser runtime
  (``hmer_runtime/static/hmer.js``) draws the same pixels; it leaves 2 px of slack inside the maximum
  size, so a render never needs preprocessing's size limit.
* **Padding** -- ``pad`` pixels of background on every side.
* **Maximum size** -- if the result would exceed ``max_height`` x ``max_width``, the scale is
  reduced to fit (symbols get smaller; training can count or drop such samples).

Rendering is deterministic: the same ink and config give the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

from hmer_runtime.errors import TOO_LARGE, InkError
from hmer_runtime.inputs.inkml import Ink, validate_ink

PENS = ("pil", "capsule")


@dataclass(frozen=True)
class RenderConfig:
    """How ink becomes an image; stored with datasets and models so both sides agree."""

    symbol_px: float = 32.0
    line_width: float = 3.0
    pad: int = 8
    max_height: int = 256
    max_width: int = 1024
    supersample: int = 4
    pen: str = "pil"  # "pil" or "capsule" (module docstring)

    def __post_init__(self):
        if self.pen not in PENS:
            raise ValueError(f"render pen must be one of {PENS}, not {self.pen!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["pen"] == "pil":  # the historical default, left out so older caches and model files keep their keys
            del d["pen"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RenderConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def symbol_size(traces: list[np.ndarray]) -> float:
    """Robust estimate of the writer's symbol size in input units (see module docstring)."""
    extents = np.array([float(np.ptp(t[:, :2], axis=0).max()) for t in traces if len(t)])
    overall = float(np.ptp(np.concatenate([t[:, :2] for t in traces if len(t)]), axis=0).max())
    # Strokes shorter than 2 % of the whole expression are dots or pen noise.
    strokes = extents[extents > 0.02 * overall]
    if len(strokes) == 0:
        return overall
    return float(np.median(strokes))


def _layout(ink: Ink, config: RenderConfig) -> tuple[list[np.ndarray], int, int]:
    """The strokes in supersampled canvas coordinates, and the canvas's width and height."""
    validate_ink(ink)
    traces = [np.asarray(t[:, :2], dtype=np.float64) for t in ink.traces if len(t)]
    lo = np.concatenate(traces).min(axis=0)
    hi = np.concatenate(traces).max(axis=0)
    scale = config.symbol_px / symbol_size(traces)
    slack = 2 if config.pen == "capsule" else 0
    inner_w = config.max_width - 2 * config.pad - config.line_width - slack
    inner_h = config.max_height - 2 * config.pad - config.line_width - slack
    span = np.maximum(hi - lo, 1e-12)
    scale = min(scale, inner_w / span[0], inner_h / span[1])

    margin = config.pad + config.line_width / 2
    width = int(np.ceil(span[0] * scale + 2 * margin))
    height = int(np.ceil(span[1] * scale + 2 * margin))
    points = [((t - lo) * scale + margin) * config.supersample for t in traces]
    return points, width, height


def ink_length(ink: Ink, config: RenderConfig = RenderConfig()) -> float:
    """How long the strokes are as ``render_ink`` draws them, in supersampled pixels: what drawing
    them costs (a CROHME expression at the model's size is about 10 000), known before drawing."""
    return _drawn_length(_layout(ink, config)[0])


def _drawn_length(points: list[np.ndarray]) -> float:
    return sum(float(np.hypot(*np.diff(p, axis=0).T).sum()) for p in points if len(p) > 1)


def render_ink(ink: Ink, config: RenderConfig = RenderConfig()) -> np.ndarray:
    """Render ink to a uint8 (H, W) array, ink dark on white. Raises InkError for degenerate ink,
    and for ink longer than :data:`MAX_INK_LENGTH` as drawn."""
    points, width, height = _layout(ink, config)
    ss = config.supersample
    lw = max(1, round(config.line_width * ss))
    check_ink_length(points, ink.id or "ink")
    if config.pen == "capsule":
        return _capsule_render(points, width, height, ss, lw / 2)
    canvas = Image.new("L", (width * ss, height * ss), 255)
    draw = ImageDraw.Draw(canvas)
    r = lw / 2
    for pts in points:
        xy = [(float(x), float(y)) for x, y in pts]
        if len(xy) > 1 and np.ptp(pts, axis=0).max() > 0:
            draw.line(xy, fill=0, width=lw, joint="curve")
            for x, y in (xy[0], xy[-1]):  # round caps
                draw.ellipse((x - r, y - r, x + r, y + r), fill=0)
        else:
            x, y = xy[0]
            draw.ellipse((x - r, y - r, x + r, y + r), fill=0)
    return np.asarray(canvas.reduce(ss), dtype=np.uint8)


#: (pixel, segment) tests per pass of ``_capsule_render``: its arrays then stay in the CPU's cache.
CAPSULE_CHUNK = 1 << 14
#: Most stroke length one render draws, in supersampled pixels (a CROHME expression at the
#: model's size draws about 10 000): drawing time is proportional to it, so this bounds the work
#: any ink can ask for.
MAX_INK_LENGTH = 4_000_000


def check_ink_length(points: list[np.ndarray], name: str = "ink") -> None:
    """InkError (too large) when the strokes, as drawn, are longer than :data:`MAX_INK_LENGTH`."""
    length = _drawn_length(points)
    if length > MAX_INK_LENGTH:
        raise InkError(name, f"strokes {length / 1e6:.1f} M pixels long as drawn, over the limit of "
                             f"{MAX_INK_LENGTH / 1e6:g} M", TOO_LARGE)


def _capsule_render(points: list[np.ndarray], width: int, height: int, ss: int, r: float) -> np.ndarray:
    """The capsule pen: a supersampled pixel is ink when its centre is within ``r`` of a segment;
    then each ss x ss block becomes round(mean). hmer.js ``renderInk`` computes the same, op for op.
    Only the pixels that can be that close are tested: for each row of a segment's box, those
    within ``r`` + 1 across of the part of the segment within ``r`` of the row, so the work grows
    with the strokes' length, not with their boxes' area. The tests run vectorised over runs of
    about ``CAPSULE_CHUNK`` (one pass over all of them is 2-3x slower: memory-bound)."""
    big_w, big_h = width * ss, height * ss
    segments = []
    for pts in points:
        pts = np.concatenate([pts, pts]) if len(pts) == 1 else pts
        segments.append(np.concatenate([pts[:-1], pts[1:]], axis=1))  # ax, ay, bx, by
    ax, ay, bx, by = np.concatenate(segments).T
    x0 = np.maximum(0, np.floor(np.minimum(ax, bx) - r)).astype(np.int64)
    x1 = np.minimum(big_w - 1, np.ceil(np.maximum(ax, bx) + r)).astype(np.int64)
    y0 = np.maximum(0, np.floor(np.minimum(ay, by) - r)).astype(np.int64)
    y1 = np.minimum(big_h - 1, np.ceil(np.maximum(ay, by) + r)).astype(np.int64)
    dx, dy = bx - ax, by - ay
    len2 = dx * dx + dy * dy
    len2[len2 == 0] = 1.0  # a dot: its numerator below is 0, so u = 0
    # one (segment, row) pair per row of each segment's box, and the columns worth testing there
    rows_per = np.maximum(y1 - y0 + 1, 0)
    seg = np.repeat(np.arange(len(ax)), rows_per)
    row = y0[seg] + np.arange(int(rows_per.sum())) - np.repeat(np.cumsum(rows_per) - rows_per, rows_per)
    cx0, width_of = _row_spans(row + 0.5, ax[seg], ay[seg], dx[seg], dy[seg], r, x0[seg], x1[seg])
    ink = np.zeros((big_h, big_w), dtype=bool)
    ends = np.cumsum(width_of)
    if len(ends) and ends[-1] > 0:
        cuts = np.searchsorted(ends, np.arange(CAPSULE_CHUNK, int(ends[-1]), CAPSULE_CHUNK), side="right")
        for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(width_of)]])):
            if hi > lo:
                c, s = slice(lo, hi), seg[lo:hi]
                _capsule_hits(ink, cx0[c], row[c], width_of[c], ax[s], ay[s], dx[s], dy[s], len2[s], r)
    paper = (~ink).reshape(height, ss, width, ss).sum(axis=(1, 3)) * 255  # exact integers
    return np.floor(paper / (ss * ss) + 0.5).astype(np.uint8)


def _row_spans(yc, ax, ay, dx, dy, r, x0, x1) -> tuple[np.ndarray, np.ndarray]:
    """(first column, number of columns) that can hold ink on the row whose centres are at
    ``yc``: a point within ``r`` of the segment is within ``r`` across of a segment point within
    ``r`` up or down, so the columns are those points' x range widened by ``r`` (and a pixel of
    slack, so rounding never drops a hit)."""
    flat = dy == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(flat, -np.inf, (yc - r - ay) / dy)
        t2 = np.where(flat, np.inf, (yc + r - ay) / dy)
    t_lo = np.maximum(0.0, np.minimum(t1, t2))
    t_hi = np.minimum(1.0, np.maximum(t1, t2))
    empty = (t_lo > t_hi) | (flat & (np.abs(ay - yc) > r + 1))
    xa, xb = ax + t_lo * dx, ax + t_hi * dx
    lo = np.maximum(x0, np.floor(np.minimum(xa, xb) - r - 1)).astype(np.int64)
    hi = np.minimum(x1, np.ceil(np.maximum(xa, xb) + r + 1)).astype(np.int64)
    return lo, np.where(empty, 0, np.maximum(hi - lo + 1, 0))


def _capsule_hits(ink, cx0, row, width, ax, ay, dx, dy, len2, r) -> None:
    """Mark on ``ink`` the pixels of these (segment, row) spans whose centres lie within ``r``."""
    k = np.arange(int(width.sum())) - np.repeat(np.cumsum(width) - width, width)
    x, y = np.repeat(cx0, width) + k, np.repeat(row, width)
    # In place, but op for op hmer.js's: t = centre - start; u = clip((t.d) / |d|^2); e = t - u d; |e|^2 <= r^2
    tx, ty = x + 0.5, y + 0.5
    tx -= np.repeat(ax, width)
    ty -= np.repeat(ay, width)
    dx, dy = np.repeat(dx, width), np.repeat(dy, width)
    u = tx * dx
    u += ty * dy
    u /= np.repeat(len2, width)
    np.clip(u, 0.0, 1.0, out=u)
    dx *= u
    dy *= u
    tx -= dx
    ty -= dy
    tx *= tx
    ty *= ty
    tx += ty
    hit = tx <= r * r
    ink[y[hit], x[hit]] = True


def model_input(obj, render: RenderConfig, pre, name: str, scale: float = 1.0) -> np.ndarray:
    """Model input (H, W) float32 of ink (rendered with ``render`` first) or an image, through
    ``hmer_runtime.inputs.preprocess`` with ``pre``: the one path training, runtime and benchmarks share.
    ``scale``: symbols end up that many times the model's size (``DecodeOptions.scales``): ink
    is drawn that much larger with the same pen, and an image is brought to that symbol size (one
    drawn with the training pen at about the training size is trusted to have it, then scaled)."""
    from hmer_runtime.inputs.preprocess import preprocess

    if isinstance(obj, Ink):
        return preprocess(render_ink(obj, at_scale(render, scale)), pre, name=name)
    return preprocess(obj, pre, name=name, scale=scale)


def model_inputs(obj, render: RenderConfig, pre, name: str, scales: Sequence[float] = (1.0,)) -> list[np.ndarray]:
    """One :func:`model_input` per scale: the views of one input (an image's ink is found once)."""
    from hmer_runtime.inputs.preprocess import preprocess_views

    if isinstance(obj, Ink):
        return [model_input(obj, render, pre, name, f) for f in scales]
    return preprocess_views(obj, pre, name, scales)


def at_scale(render: RenderConfig, factor: float) -> RenderConfig:
    """The render settings that draw ink ``factor`` times as large with the same pen (unrounded, so
    hmer.js's ``atScale`` draws the same pixels)."""
    return render if factor == 1.0 else replace(render, symbol_px=render.symbol_px * factor)
