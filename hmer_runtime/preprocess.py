"""Image -> model input, shared by training and the runtime.

Model input is float32 (H, W) with **ink = 1.0 and background = 0.0**, so zero padding is
background. Any PIL image mode works: alpha is composited on white, colour is converted to
luminance, light-on-dark images are detected and inverted, the background level is subtracted
(per region when the lighting is uneven, after a median filter when the paper is noisy), the
image is cropped to its ink, rescaled so strokes are as wide as in training (``stroke_width``),
and padded with ``pad`` pixels.

Clean renders (uniform paper, training stroke width) pass through the photo steps unchanged, so
training data and a drawing pad's strokes see exactly the classic pipeline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, UnidentifiedImageError

from hmer_runtime.errors import ImageError

#: Images with more pixels than this are refused before decoding (decompression bombs).
MAX_IMAGE_PIXELS = 40_000_000


@dataclass(frozen=True)
class PreprocessConfig:
    """Stored in model.json; the runtime rebuilds it from there."""

    pad: int = 8
    max_height: int = 256
    max_width: int = 1024
    ink_threshold: float = 0.2
    #: Stroke width (px) of the training images; inputs whose strokes are more than 1.5x wider or
    #: narrower are rescaled to it (a phone photo's 12 px pen becomes a render's 3 px). 0 = off.
    stroke_width: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def load_image(path: str | Path | bytes, name: str | None = None, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image file (or encoded bytes, e.g. an upload), refusing non-images and
    decompression bombs with an ImageError naming ``name`` or the path."""
    import io

    source = io.BytesIO(path) if isinstance(path, bytes) else Path(path)
    path = name or ("<upload>" if isinstance(path, bytes) else path)
    try:
        with Image.open(source) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(str(path), f"image is {w}x{h} pixels, over the {max_pixels} limit")
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


def to_gray(image: Image.Image | np.ndarray) -> np.ndarray:
    """Luminance in [0, 1] as float32; transparent pixels count as white paper."""
    if isinstance(image, np.ndarray):
        arr = image.astype(np.float32)
        if arr.ndim == 3:
            arr = arr[..., :3].mean(axis=-1)
        return arr / 255.0 if arr.max() > 1.0 else arr
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


def preprocess(image: Image.Image | np.ndarray, config: PreprocessConfig = PreprocessConfig(),
               name: str = "<image>") -> np.ndarray:
    """Model input (H, W) float32, ink 1.0 on 0.0, cropped to the ink, padded, within max size."""
    ink = ink_map(to_gray(image))
    ink[ink < config.ink_threshold * 0.5] = 0.0
    rows = np.flatnonzero((ink >= config.ink_threshold).any(axis=1))
    cols = np.flatnonzero((ink >= config.ink_threshold).any(axis=0))
    if len(rows) == 0:
        raise ImageError(name, "no ink found (blank image)")
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    if config.stroke_width > 0:
        s = config.stroke_width / max(stroke_width(ink, config.ink_threshold), 1e-6)
        if not 1 / 1.5 <= s <= 1.5:
            s = min(max(s, 1 / 16), 2.0)
            size = (max(1, round(ink.shape[1] * s)), max(1, round(ink.shape[0] * s)))
            method = Image.Resampling.BOX if s < 1 else Image.Resampling.BILINEAR
            ink = np.asarray(Image.fromarray(ink, mode="F").resize(size, method))
    p = config.pad
    limit_h, limit_w = config.max_height - 2 * p, config.max_width - 2 * p
    h, w = ink.shape
    if h > limit_h or w > limit_w:
        s = min(limit_h / h, limit_w / w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        ink = np.asarray(Image.fromarray(ink, mode="F").resize(size, Image.Resampling.BOX))
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
