"""DenseNet-B encoder (WAP/CoMER): growth 24, three dense blocks of depth 16, bottlenecks,
compression 0.5, output stride 16. ``growth``/``depth`` shrink it for edge models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 16


class Bottleneck(nn.Module):
    def __init__(self, channels: int, growth: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.dropout(self.conv2(F.relu(self.bn2(out))))
        return torch.cat([x, out], 1)


class Transition(nn.Module):
    def __init__(self, channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.dropout(self.conv(F.relu(self.bn(x)))), 2)


class DenseNetEncoder(nn.Module):
    """Image (N, 1, H, W) -> features (N, C, H/16, W/16); H and W are padded to multiples of 16."""

    def __init__(self, growth: int = 24, depth: int = 16, compression: float = 0.5, dropout: float = 0.0):
        super().__init__()
        channels = 2 * growth
        self.stem = nn.Conv2d(1, channels, 7, stride=2, padding=3, bias=False)
        self.stem_bn = nn.BatchNorm2d(channels)
        layers: list[nn.Module] = []
        for block in range(3):
            for _ in range(depth):
                layers.append(Bottleneck(channels, growth, dropout))
                channels += growth
            if block < 2:
                out = int(channels * compression)
                layers.append(Transition(channels, out, dropout))
                channels = out
        self.blocks = nn.Sequential(*layers)
        self.out_bn = nn.BatchNorm2d(channels)
        self.out_channels = channels

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns features and their mask (N, H/16, W/16), True where the image is real."""
        x = F.relu(self.stem_bn(self.stem(images)))
        x = F.max_pool2d(x, 2)
        x = F.relu(self.out_bn(self.blocks(x)))
        return x, mask[:, ::STRIDE, ::STRIDE]


def pad_to_stride(images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad (N, 1, H, W) images and (N, H, W) masks on the bottom/right to multiples of 16."""
    h, w = images.shape[-2:]
    ph, pw = (-h) % STRIDE, (-w) % STRIDE
    if ph or pw:
        images = F.pad(images, (0, pw, 0, ph))
        mask = F.pad(mask, (0, pw, 0, ph))
    return images, mask
