"""Training augmentation: on the ink before it is rendered, and on images (torchvision v2).

An ink sample is distorted as a writer would vary it (slant, rotation, width, each stroke's place
and size, a smooth elastic warp), then rendered and preprocessed by the runtime's own path
(``render.model_input``) at a random symbol size and pen width, so the model sees what the
runtime will give it. An image sample (no strokes) is resized, rotated, sheared, thickened or
thinned and warped with ``torchvision.transforms.v2.functional``; an ink sample's render gets the
same image-level changes at probability ``image``, so the model also sees pens and distortions
that no ink-level change makes. Both may then be blurred, faded (a fainter pen on greyer paper)
and noised.

Every draw comes from the ``random.Random`` the caller seeds per (seed, epoch, sample), so an
epoch augments the same in any worker process and a resumed run sees what an uninterrupted one
would. A field left out of ``train.augment`` is off, so a checkpoint written before it existed
resumes with the augmentation it was trained with.
"""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from hmer_runtime.inputs.inkml import Ink
from hmer_runtime.inputs.preprocess import PreprocessConfig
from hmer_runtime.inputs.render import RenderConfig, model_input, symbol_size
from hmer_train.config import AugmentConfig


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _smooth_field(gen: np.random.Generator, points: np.ndarray, wavelength: float, amplitude: float) -> np.ndarray:
    """A smooth random displacement of each (x, y): a sum of four plane waves per axis whose
    wavelength is about ``wavelength``, scaled so its largest value is ``amplitude``."""
    out = np.zeros_like(points)
    for axis in (0, 1):
        angles = gen.uniform(0, 2 * np.pi, 4)
        freqs = 2 * np.pi / (wavelength * gen.uniform(0.7, 1.5, 4))
        phases = gen.uniform(0, 2 * np.pi, 4)
        directions = np.stack([np.cos(angles), np.sin(angles)], axis=1) * freqs[:, None]
        out[:, axis] = np.sin(points @ directions.T + phases).sum(axis=1) / 4
    return out * amplitude


def augment_ink(ink: Ink, rng: random.Random, cfg: AugmentConfig) -> Ink:
    """A randomly rewritten copy of ``ink`` (geometry only; size and pen are chosen at render)."""
    traces = [np.asarray(t[:, :2], dtype=np.float64) for t in ink.traces if len(t)]
    size = symbol_size(traces)
    gen = np.random.default_rng(rng.getrandbits(64))
    centre = np.concatenate(traces).mean(axis=0)
    a = math.radians(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
    sx = math.exp(rng.uniform(-cfg.aspect, cfg.aspect))
    k = rng.uniform(-cfg.shear, cfg.shear)
    # x' = R (S x): slant and aspect first, then rotation (rows act on row vectors below)
    m = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) @ np.array([[sx, k], [0.0, 1.0]])
    out = []
    for t in traces:
        p = t - centre
        if cfg.stroke_scale or cfg.stroke_shift:
            c = p.mean(axis=0)
            p = c + (p - c) * math.exp(gen.normal(0, cfg.stroke_scale)) + gen.normal(0, cfg.stroke_shift * size, 2)
        out.append(p)
    if cfg.elastic:
        flat = np.concatenate(out)
        flat = flat + _smooth_field(gen, flat, 3 * size, cfg.elastic * size)
        out = np.split(flat, np.cumsum([len(p) for p in out])[:-1])
    return Ink(traces=[p @ m.T for p in out], truth=ink.truth, id=ink.id)


def render_augmented(ink: Ink, rng: random.Random, cfg: AugmentConfig, render: RenderConfig,
                     pre: PreprocessConfig) -> np.ndarray:
    """Model input of an augmented ``ink``: rewritten (:func:`augment_ink`), rendered at a random
    symbol size and pen width, and preprocessed as the runtime preprocesses."""
    s = _log_uniform(rng, *cfg.scale)
    pen = rng.uniform(*cfg.pen_width)
    r = dataclasses.replace(render, symbol_px=render.symbol_px * s, line_width=render.line_width * pen)
    return model_input(augment_ink(ink, rng, cfg), r, pre, ink.id)


def augment_image(img: np.ndarray, rng: random.Random, cfg: AugmentConfig, max_hw: tuple[int, int],
                  resize: bool = True) -> np.ndarray:
    """Resize (``resize``: by ``scale`` and ``aspect``), rotate + shear, thicken or thin the pen,
    warp, blur, fade and noise an ink-1.0 (H, W) image."""
    x = _geometry(torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None], rng, cfg, max_hw, resize)
    return _finish(x, rng, cfg)


def _geometry(x: torch.Tensor, rng: random.Random, cfg: AugmentConfig, max_hw: tuple[int, int],
              resize: bool) -> torch.Tensor:
    h, w = x.shape[-2:]
    if resize:
        s = _log_uniform(rng, *cfg.scale)
        a = math.exp(rng.uniform(-cfg.aspect, cfg.aspect)) if cfg.aspect else 1.0
        s = min(s, max_hw[0] / h, max_hw[1] / (w * a))
        if abs(s - 1) > 1e-3 or abs(a - 1) > 1e-3:
            x = TF.resize(x, [max(1, round(h * s)), max(1, round(w * s * a))], antialias=True)
    if cfg.rotate_deg or cfg.shear:
        x = TF.affine(x, angle=rng.uniform(-cfg.rotate_deg, cfg.rotate_deg), translate=[0, 0], scale=1.0,
                      shear=[math.degrees(math.atan(rng.uniform(-cfg.shear, cfg.shear))), 0.0],
                      interpolation=InterpolationMode.BILINEAR)
    if cfg.stroke_jitter and rng.random() < cfg.stroke_jitter:
        thicker = rng.random() < 0.5
        y = F.max_pool2d(x if thicker else -x, 3, 1, 1)
        y = y if thicker else -y
        if y.max() > 0:  # thinning can erase thin ink: keep it then
            x = y
    if cfg.elastic:
        x = _elastic(x, rng, cfg.elastic)
    return x


def finish_image(img: np.ndarray, rng: random.Random, cfg: AugmentConfig, max_hw: tuple[int, int]) -> np.ndarray:
    """The image-level steps an ink render gets: at probability ``image`` the geometric ones of
    :func:`augment_image` (the size stays the render's), then blur, fading and noise."""
    if not (cfg.blur or cfg.contrast or cfg.noise or cfg.image):
        return img
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None]
    if cfg.image and rng.random() < cfg.image:
        x = _geometry(x, rng, cfg, max_hw, resize=False)
    return _finish(x, rng, cfg)


def _finish(x: torch.Tensor, rng: random.Random, cfg: AugmentConfig) -> np.ndarray:
    x = _blur(x, rng, cfg.blur)
    if cfg.contrast and rng.random() < cfg.contrast:
        # ink 1.0 on 0.0: a fainter pen scales the ink, greyer paper lifts what is not ink
        x = TF.adjust_brightness(x, rng.uniform(0.55, 1.0))
        x = x + rng.uniform(0.0, 0.1) * (1 - x)
    if cfg.noise and rng.random() < cfg.noise:
        gen = torch.Generator().manual_seed(rng.getrandbits(63))
        x = x + torch.randn(x.shape, generator=gen) * rng.uniform(0.01, 0.06)
    return np.ascontiguousarray(x[0].clamp_(0, 1).numpy())


def _elastic(x: torch.Tensor, rng: random.Random, amount: float) -> torch.Tensor:
    """Warp (1, H, W) by coarse Gaussian noise upsampled smoothly, at most ``amount`` symbol
    sizes (a symbol taken as a quarter of the height, as in a one-line expression)."""
    h, w = x.shape[-2:]
    if h < 2 or w < 2:
        return x
    gen = torch.Generator().manual_seed(rng.getrandbits(63))
    coarse = torch.randn(1, 2, 4, max(2, round(4 * w / h)), generator=gen)
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)[0].permute(1, 2, 0)
    field = field / field.abs().amax().clamp(min=1e-6) * (amount * h / 4)
    field = field * torch.tensor([2.0 / w, 2.0 / h])  # pixels to grid_sample's [-1, 1] units
    return TF.elastic(x, field[None], interpolation=InterpolationMode.BILINEAR)


def _blur(x: torch.Tensor, rng: random.Random, p: float) -> torch.Tensor:
    if p and rng.random() < p:
        x = TF.gaussian_blur(x, kernel_size=[3, 3], sigma=[rng.uniform(0.3, 0.8)] * 2)
    return x
