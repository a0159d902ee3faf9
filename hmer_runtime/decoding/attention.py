"""Attention strips: the model input with each decoded token's attention overlaid, one panel per step."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def attention_strip(image: np.ndarray, attention: list[np.ndarray], tokens: list[str], stride: int = 16,
                    columns: int = 4) -> Image.Image:
    """``image``: model input (H, W), ink 1.0; ``attention``: per token an (h, w) map over the
    encoder grid. Returns an RGB grid of panels titled with the token, attention in red."""
    h, w = image.shape
    paper = (255 - np.clip(image, 0, 1) * 255).astype(np.uint8)
    label_h = 14
    panels = []
    for tok, att in zip(tokens, attention):
        a = np.asarray(att, dtype=np.float32)
        a = a / max(float(a.max()), 1e-9)
        heat = Image.fromarray((a * 255).astype(np.uint8)).resize((a.shape[1] * stride, a.shape[0] * stride),
                                                                  Image.Resampling.BILINEAR)
        heat = np.asarray(heat, dtype=np.float32)[:h, :w] / 255.0
        heat = np.pad(heat, ((0, h - heat.shape[0]), (0, w - heat.shape[1])))
        rgb = np.stack([paper] * 3, -1).astype(np.float32)
        rgb[..., 1] *= 1 - 0.7 * heat
        rgb[..., 2] *= 1 - 0.7 * heat
        panel = Image.new("RGB", (w, h + label_h), "white")
        panel.paste(Image.fromarray(rgb.astype(np.uint8)), (0, label_h))
        ImageDraw.Draw(panel).text((2, 1), tok, fill=(0, 0, 160))
        panels.append(panel)
    if not panels:
        return Image.fromarray(paper).convert("RGB")
    cols = min(columns, len(panels))
    rows = -(-len(panels) // cols)
    grid = Image.new("RGB", (cols * (w + 4), rows * (h + label_h + 4)), (200, 200, 200))
    for i, p in enumerate(panels):
        grid.paste(p, ((i % cols) * (w + 4), (i // cols) * (h + label_h + 4)))
    return grid
