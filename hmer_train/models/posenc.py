"""Sinusoidal positional encodings: 1-D for tokens, 2-D (normalised row/column) for image features."""

from __future__ import annotations

import math

import torch


def sinusoid(pos: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(…,) positions -> (…, dim) sin/cos features."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=pos.device) * (-math.log(temperature) / half))
    angles = pos.float().unsqueeze(-1) * freq
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def image_posenc(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, h, w) feature mask -> (N, h, w, dim): half rows, half columns, normalised to the
    real (unpadded) extent of each image so positions mean the same at any width."""
    m = mask.float()
    y = m.cumsum(1)
    x = m.cumsum(2)
    y = y / (y[:, -1:, :] + 1e-6)
    x = x / (x[:, :, -1:] + 1e-6)
    scale = 2 * math.pi
    return torch.cat([sinusoid(y * scale * 100, dim // 2), sinusoid(x * scale * 100, dim // 2)], dim=-1)
