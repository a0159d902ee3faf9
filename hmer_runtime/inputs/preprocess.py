"""Image -> model input, shared by training and the runtime.

Model input is float32 (H, W) with **ink = 1.0 and background = 0.0**, so zero padding is
background. Any PIL image mode works: alpha is composited on white, colour is converted to
luminance, light-on-dark images are detected and inverted, the background level is subtracted
(per region when the lighting is uneven, after a median filter when the paper is noisy), the
image is cropped to its ink, brought to the training scale, and padded with ``pad`` pixels.

Scale: the training renders have symbols of ``symbol_px`` and strokes of ``stroke_width`` pixels.
A photo or scan differs in both, and not by the same factor: a fine pen at high resolution has
big symbols and thin strokes. Symbols are measured as the renderer measures them (the median
extent of the connected ink components), the image is resized to the training symbol size, and
then strokes not within ``PEN_TOLERANCE`` of the training width are thickened or thinned. Models exported before
``symbol_px`` existed are resized by stroke width alone.

Clean renders (uniform paper, training stroke width and symbol size) pass through the photo
steps unchanged, so training data and a drawing pad's strokes see exactly the classic pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, UnidentifiedImageError

from hmer_runtime.errors import NOTHING_TO_READ, TOO_LARGE, ImageError, input_error
from hmer_runtime.files import MAX_IMAGE_BYTES, read_bounded

#: Images with more pixels than this are refused before decoding (decompression bombs).
MAX_IMAGE_PIXELS = 40_000_000


@dataclass(frozen=True)
class PreprocessConfig:
    """Stored in model.json; the runtime rebuilds it from there."""

    pad: int = 8
    max_height: int = 256
    max_width: int = 1024
    ink_threshold: float = 0.2
    #: Stroke width (px) of the training images; inputs whose strokes are far off it are brought
    #: to it (a phone photo's 12 px pen becomes a render's 3 px; see ``_training_scale``). 0 = off.
    stroke_width: float = 0.0
    #: Symbol size (px) of the training images (the renders' ``symbol_px``). With ``stroke_width``,
    #: images are resized by symbol size, then their strokes matched. 0 = resize by stroke width.
    symbol_px: float = 0.0
    #: Read the image as it is (CoMER's convention: greyscale, ink 1.0 on 0.0, inverted only when
    #: the ink is dark on light): no cropping, padding, cleaning or rescaling, only the size limit.
    as_given: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def load_image(path: str | Path | bytes, name: str | None = None, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image file (or encoded bytes, e.g. an upload), refusing non-images and
    decompression bombs with an ImageError naming ``name`` or the path. Files are read with
    :func:`hmer_runtime.files.read_bounded` (regular files of at most MAX_IMAGE_BYTES)."""
    import io

    label = name or ("<upload>" if isinstance(path, bytes) else str(path))
    data = path if isinstance(path, bytes) else read_bounded(path, MAX_IMAGE_BYTES, label, ImageError)
    path = label
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(str(path), f"image is {w}x{h} pixels, over the {max_pixels} limit", TOO_LARGE)
            im.load()
            return im.copy()
    except ImageError:
        raise
    except FileNotFoundError as e:
        raise ImageError(str(path), "no such file") from e
    except IsADirectoryError as e:
        raise ImageError(str(path), "is a directory") from e
    except Image.DecompressionBombError as e:
        raise ImageError(str(path), f"image is too large, refused as a decompression bomb ({e})") from e
    except UnidentifiedImageError as e:
        raise ImageError(str(path), f"not a readable image ({e.__class__.__name__})") from e
    except OSError as e:
        raise ImageError(str(path), f"cannot read image: {e}") from e
    except Exception as e:  # noqa: BLE001 - a decoder's ValueError (e.g. an oversized PNG text chunk), ...
        raise ImageError(str(path), f"cannot decode image ({input_error(str(path), e).message})") from e


def to_gray(image: Image.Image | np.ndarray) -> np.ndarray:
    """Luminance in [0, 1] as float32; transparent pixels count as white paper."""
    if isinstance(image, np.ndarray):
        arr = image.astype(np.float32)
        if arr.ndim == 3:
            arr = arr[..., :3].mean(axis=-1)
        return arr / 255.0 if arr.max() > 1.0 else arr
    if image.mode.startswith("I") or image.mode == "F":
        # 16/32-bit greyscale: scale by the format's range (convert("L") would clip at 255).
        # PIL reads 16-bit PNG/TIFF greyscale as I;16 or I (0-65535); F is float, 0-1 or 0-255.
        arr = np.asarray(image, dtype=np.float64)
        top = (1.0 if arr.max() <= 1.0 else 255.0) if image.mode == "F" else 65535.0
        return np.clip(arr / top, 0.0, 1.0).astype(np.float32)
    if image.mode == "LAB":  # L* is the lightness channel
        return np.asarray(image.getchannel(0), dtype=np.float32) / 255.0
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def _local_background(gray: np.ndarray, dark_ink: bool) -> np.ndarray | None:
    """Paper level per pixel when lighting is uneven (None when it is uniform): the brightest
    (dark ink) or darkest level in a neighbourhood wider than a stroke, smoothed."""
    im = Image.fromarray(np.clip(gray * 255, 0, 255).astype(np.uint8))
    factor = max(1, max(gray.shape) // 128)
    small = im.reduce(factor) if factor > 1 else im
    small = small.filter(ImageFilter.MaxFilter(7) if dark_ink else ImageFilter.MinFilter(7))
    small = small.filter(ImageFilter.GaussianBlur(3))
    bg = np.asarray(small.resize(im.size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    return bg if float(np.ptp(bg)) > 0.08 else None


def ink_map(gray: np.ndarray) -> np.ndarray:
    """Ink intensity (1 = ink) from luminance, with polarity detected and background removed.

    The background is the most common level, taken as the median: handwriting covers far less
    than half of an image. Ink is whatever differs from it, in the direction of the minority.
    Uneven lighting (photos) is levelled with a local background; speckle noise is median-filtered.
    """
    bg = float(np.median(gray))
    dark_ink = bg >= 0.5
    if float(np.median(np.abs(gray - bg))) > 0.02:  # noisy paper: remove speckles first
        im = Image.fromarray(np.clip(gray * 255, 0, 255).astype(np.uint8)).filter(ImageFilter.MedianFilter(3))
        gray = np.asarray(im, dtype=np.float32) / 255.0
    local = _local_background(gray, dark_ink)
    level = local if local is not None else bg
    ink = (level - gray) if dark_ink else (gray - level)
    scale = max(float(ink.max()), 1e-6)
    return np.clip(ink / scale, 0.0, 1.0).astype(np.float32)


def stroke_width(ink: np.ndarray, threshold: float = 0.2) -> float:
    """Mean stroke width in pixels: twice the ink area over its (city-block) perimeter. Within
    15 % of the pen width for renders of 2.5-12 px strokes."""
    b = (ink >= threshold).astype(np.int8)
    area = int(b.sum())
    perimeter = int(np.abs(np.diff(b, axis=0)).sum() + np.abs(np.diff(b, axis=1)).sum())
    return 2.0 * area / max(perimeter, 1)


#: Median component extent of a training render, in its ``symbol_px``: components join strokes
#: that touch, so they run a little larger than the renderer's median stroke (1.05-1.13 on 300
#: CROHME 2013 renders at 24, 32 and 48 px; 98 % of renders within x1.6 of it).
COMPONENT_PER_SYMBOL = 1.08


def component_extents(mask: np.ndarray) -> np.ndarray:
    """Extent (max of height, width) of each 8-connected component of a boolean mask.

    Works on runs of ink within rows rather than on pixels: two runs in neighbouring rows join
    when they touch (diagonals included), and runs take the smallest label of their neighbours,
    following labels to their own labels, until nothing changes (10-40x faster than per pixel)."""
    h, w = mask.shape
    width = w + 2
    padded = np.zeros((h, width), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)  # run r covers columns starts[r] .. ends[r] - 1
    _, ends = np.nonzero(edges == -1)
    n = len(rows)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    start_key, end_key = rows * width + starts, rows * width + ends
    # The runs of the row above that touch run b are consecutive in row-major order: [lo, hi).
    above = (rows - 1) * width
    lo = np.searchsorted(end_key, above + starts, side="left")
    hi = np.searchsorted(start_key, above + ends, side="right")
    count = np.maximum(hi - lo, 0)
    b = np.repeat(np.arange(n), count)
    a = np.repeat(lo, count) + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    labels = np.arange(n)
    while True:
        new = labels.copy()
        np.minimum.at(new, a, labels[b])
        np.minimum.at(new, b, labels[a])
        new = new[new]
        if np.array_equal(new, labels):
            break
        labels = new
    _, comp = np.unique(labels, return_inverse=True)
    k = int(comp.max()) + 1
    top, bottom = np.full(k, h), np.zeros(k, np.int64)
    left, right = np.full(k, w), np.zeros(k, np.int64)
    np.minimum.at(top, comp, rows)
    np.maximum.at(bottom, comp, rows)
    np.minimum.at(left, comp, starts)
    np.maximum.at(right, comp, ends)
    return np.maximum(bottom - top + 1, right - left)


def written_symbol_size(ink: np.ndarray, threshold: float = 0.2, stroke: float | None = None,
                        min_components: int = 3) -> float:
    """Symbol size in pixels as the renderer defines it (``render.symbol_size``: the median extent
    of the strokes that are not dots), from the image: the median extent of its ink components
    that are not dots, less one stroke width, over ``COMPONENT_PER_SYMBOL``. 0.0 when fewer than
    ``min_components`` are left (one square root around everything tells nothing). Large images
    are measured at most 1024 px wide; ink gaps narrower than the reduction factor join up."""
    stroke = stroke_width(ink, threshold) if stroke is None else stroke
    return _size_of(_symbol_extents(ink, threshold, stroke), stroke, min_components)


def _symbol_extents(ink: np.ndarray, threshold: float, stroke: float) -> np.ndarray:
    """Extents of the ink components that are not dots (``written_symbol_size``)."""
    mask = ink >= threshold
    f = max(1, -(-max(mask.shape) // 1024))
    if f > 1:  # max-pool: ink stays ink
        h, w = -(-mask.shape[0] // f) * f, -(-mask.shape[1] // f) * f
        mask = np.pad(mask, ((0, h - mask.shape[0]), (0, w - mask.shape[1])))
        mask = mask.reshape(h // f, f, w // f, f).any(axis=(1, 3))
    extents = component_extents(mask) * f
    return extents[(extents > 0.02 * max(ink.shape)) & (extents > 2 * stroke + f)]


def _size_of(strokes: np.ndarray, stroke: float, min_components: int) -> float:
    if len(strokes) < max(min_components, 1):
        return 0.0
    return max(float(np.median(strokes)) - stroke, 1.0) / COMPONENT_PER_SYMBOL


def _resize(ink: np.ndarray, s: float) -> np.ndarray:
    size = (max(1, round(ink.shape[1] * s)), max(1, round(ink.shape[0] * s)))
    method = Image.Resampling.BOX if s < 1 else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(ink, mode="F").resize(size, method))


def _morph_step(ink: np.ndarray, grow: bool, cross: bool) -> np.ndarray:
    """Grey dilation (``grow``) or erosion by a 3x3 square, or by a 3x3 cross when ``cross``."""
    if not cross:
        im = Image.fromarray(ink, mode="F")
        return np.asarray(im.filter(ImageFilter.MaxFilter(3) if grow else ImageFilter.MinFilter(3)))
    pick = np.maximum if grow else np.minimum
    p = np.pad(ink, 1)
    return pick.reduce([p[1:-1, 1:-1], p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]])


#: Stroke widths within this factor of the training pen's are left as they are: renders with the
#: training pen measure 0.8-1.13 of it (all of CROHME 2013 + 2014), and training varies the pen
#: 0.85-1.2x. Wider, a thick pen resized by its symbol size kept strokes up to 1.5x too thick.
PEN_TOLERANCE = 1.25


def pen_fits(width: float, target: float) -> bool:
    """Whether a measured stroke ``width`` passes for the training pen's ``target``."""
    return 1 / PEN_TOLERANCE <= width / max(target, 1e-6) <= PEN_TOLERANCE


def match_stroke(ink: np.ndarray, target: float, threshold: float) -> np.ndarray:
    """Thicken or thin strokes that do not pass for ``target`` pixels (:func:`pen_fits`), and
    bring faint ink (a thin line after downsizing) back to full strength.

    The strokes are grown or eroded at twice the scale, alternating square and cross steps (an
    octagon, close to the renderer's round pen; a square alone makes diagonals too thick), one
    step at a time until the width is nearest ``target``, then box-downsampled so that edges stay
    antialiased like a render's (docs/MODEL.md, "Robustness", has what this changed)."""
    width = stroke_width(ink, threshold)
    if not pen_fits(width, target):
        grow, up = width < target, _resize(ink, 2.0)
        for k in range(16):
            up = _morph_step(up, grow, cross=k % 2 == 1)
            down = np.asarray(Image.fromarray(np.ascontiguousarray(up, dtype=np.float32), mode="F").resize(
                (ink.shape[1], ink.shape[0]), Image.Resampling.BOX))
            w = stroke_width(down, threshold)
            if not (down >= threshold).any() or abs(w - target) >= abs(width - target):
                break
            ink, width = down, w
    peak = float(np.percentile(ink[ink >= threshold], 90)) if (ink >= threshold).any() else 1.0
    return np.clip(ink / max(peak, threshold), 0.0, 1.0).astype(np.float32)


def _training_scale(ink: np.ndarray, config: PreprocessConfig, scale: float = 1.0) -> np.ndarray:
    """Resize cropped ink to ``scale`` times the training renders' symbol size, at the training
    stroke width (module docstring)."""
    t = config.ink_threshold
    width = stroke_width(ink, t)
    by_stroke = config.stroke_width / max(width, 1e-6)
    p = config.pad
    limit = min((config.max_height - 2 * p) / ink.shape[0], (config.max_width - 2 * p) / ink.shape[1])
    if config.symbol_px > 0:
        # With the training pen, only a confident symbol measure (5 symbols or more), x2 off, resizes.
        # With another pen, even one or two symbols measure it: their size is a rough measure, but
        # the pen's width is no measure at all (a marker would halve the image, a fine pen double it).
        fits = pen_fits(width, config.stroke_width)
        size = _size_of(_symbol_extents(ink, t, width), width, 5 if fits else 1)
        if size > 0:
            s = config.symbol_px / size
            if fits and 0.5 <= s <= 2.0:
                if scale == 1.0:
                    return ink
                s = 1.0  # the training size: trusted, then scaled
            s = min(max(s * scale, 1 / 16), 3.0, limit)
            if abs(np.log(s)) > np.log(1.1) or scale != 1.0:
                ink = _resize(ink, s)
            return match_stroke(ink, config.stroke_width, t)
    # Models exported before symbol_px, or too few symbols to measure: stroke width alone.
    if 1 / 1.5 <= by_stroke <= 1.5:
        if scale == 1.0:
            return ink
        by_stroke = 1.0  # trusted, then scaled
    ink = _resize(ink, min(max(by_stroke, 1 / 16), 2.0) * scale)
    return ink if scale == 1.0 else match_stroke(ink, config.stroke_width, t)


def _erase_rules(ink: np.ndarray, threshold: float) -> None:
    """Erase, in place, the faint lines of ruled or squared paper: rows (columns) of faint ink
    that cross the whole image, edge to edge. Where two lines cross, or ink crosses a line, the
    sum can pass ``threshold``, so up to twice that is erased on them; writing is darker. A
    render's fraction bar stops at the padding, so renders are left as they are."""
    margin = 3
    for view in (ink, ink.T):  # horizontal lines, then vertical ones
        faint = (view > 0) & (view < threshold)
        lines = (((view > 0).mean(axis=1) > 0.8) & (np.median(np.where(view > 0, view, 1.0), axis=1) < threshold)
                 & faint[:, :margin].any(axis=1) & faint[:, -margin:].any(axis=1))
        if lines.any():
            view[lines] = np.where(view[lines] < 2 * threshold, 0.0, view[lines])


def preprocess(image: Image.Image | np.ndarray, config: PreprocessConfig = PreprocessConfig(),
               name: str = "<image>", scale: float = 1.0) -> np.ndarray:
    """Model input (H, W) float32, ink 1.0 on 0.0, cropped to the ink, padded, within max size
    (``config.as_given``: as it is, within max size). ``scale``: symbols end up that many times
    the training size (``DecodeOptions.scales``; ``render.model_input``)."""
    return preprocess_views(image, config, name, (scale,))[0]


def preprocess_views(image: Image.Image | np.ndarray, config: PreprocessConfig = PreprocessConfig(),
                     name: str = "<image>", scales: Sequence[float] = (1.0,)) -> list[np.ndarray]:
    """:func:`preprocess` at each of ``scales``; the ink is found and cleaned once."""
    if config.as_given:
        gray = to_gray(image)
        ink = 1.0 - gray if float(np.median(gray)) >= 0.5 else gray
        if not (ink >= config.ink_threshold).any():
            raise ImageError(name, "no ink found (blank image)", NOTHING_TO_READ)
        h, w = ink.shape
        if h > config.max_height or w > config.max_width:
            ink = _resize(ink, min(config.max_height / h, config.max_width / w))
        return [np.ascontiguousarray(ink, dtype=np.float32)] * len(scales)
    ink = ink_map(to_gray(image))
    ink[ink < config.ink_threshold * 0.5] = 0.0
    _erase_rules(ink, config.ink_threshold)
    rows = np.flatnonzero((ink >= config.ink_threshold).any(axis=1))
    cols = np.flatnonzero((ink >= config.ink_threshold).any(axis=0))
    if len(rows) == 0:
        raise ImageError(name, "no ink found (blank image)", NOTHING_TO_READ)
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return [_fit(_training_scale(ink, config, f) if config.stroke_width > 0 else ink, config) for f in scales]


def _fit(ink: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Cropped ink within the maximum size, padded."""
    p = config.pad
    limit_h, limit_w = config.max_height - 2 * p, config.max_width - 2 * p
    h, w = ink.shape
    if h > limit_h or w > limit_w:
        ink = _resize(ink, min(limit_h / h, limit_w / w))
    return np.pad(ink, p).astype(np.float32)


def pad_batch(images: list[np.ndarray], stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Stack (H, W) model inputs into (N, 1, H, W) float32 and an (N, H, W) bool mask (True on
    real pixels), zero-padded at the bottom/right to the largest size rounded up to ``stride``."""
    h = max(i.shape[0] for i in images)
    w = max(i.shape[1] for i in images)
    h, w = -(-h // stride) * stride, -(-w // stride) * stride
    batch = np.zeros((len(images), 1, h, w), dtype=np.float32)
    mask = np.zeros((len(images), h, w), dtype=bool)
    for i, img in enumerate(images):
        batch[i, 0, : img.shape[0], : img.shape[1]] = img
        mask[i, : img.shape[0], : img.shape[1]] = True
    return batch, mask
