"""Image -> model input, shared by training and the runtime.

Model input is float32 (H, W) with **ink = 1.0 and background = 0.0**, so zero padding is
background. Any PIL image mode works: alpha is composited on white, colour is converted to
luminance, light-on-dark images are detected and inverted, the background level is subtracted
and the image is cropped to its ink plus ``pad`` pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def load_image(path: str | Path) -> Image.Image:
    """Open an image file, refusing non-images and decompression bombs with an ImageError."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ImageError(str(path), f"image is {w}x{h} pixels, over the {MAX_IMAGE_PIXELS} limit")
            im.load()
            return im.copy()
    except ImageError:
        raise
    except FileNotFoundError as e:
        raise ImageError(str(path), "no such file") from e
    except IsADirectoryError as e:
        raise ImageError(str(path), "is a directory") from e
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
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


def ink_map(gray: np.ndarray) -> np.ndarray:
    """Ink intensity (1 = ink) from luminance, with polarity detected and background removed.

    The background is the most common level, taken as the median: handwriting covers far less
    than half of an image. Ink is whatever differs from it, in the direction of the minority.
    """
    bg = float(np.median(gray))
    ink = (bg - gray) if bg >= 0.5 else (gray - bg)
    scale = max(float(ink.max()), 1e-6)
    return np.clip(ink / scale, 0.0, 1.0).astype(np.float32)


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
    p = config.pad
    limit_h, limit_w = config.max_height - 2 * p, config.max_width - 2 * p
    h, w = ink.shape
    if h > limit_h or w > limit_w:
        s = min(limit_h / h, limit_w / w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        ink = np.asarray(Image.fromarray(ink, mode="F").resize(size, Image.Resampling.BOX))
    return np.pad(ink, p).astype(np.float32)
