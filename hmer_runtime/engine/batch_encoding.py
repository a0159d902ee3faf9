"""Encoding a batch so that each image reads as it reads alone.

The encoder (a DenseNet) has no mask: zero padding around an image is convolved like ink-free
paper, and with a receptive field as wide as the whole feature map, every feature of an image
changes with how much padding its batch adds. A batch then read images differently from the
same images alone: 68 of the first 200 CROHME 2014 expressions changed between ``hmer-run
--batch-size 1`` and 8 (beam 10), and a server's answer depended on who else was asking.

:func:`encode_each` encodes every image at its own size (images of one size together) and pads
the encoder's outputs into one batch along their feature-map axes, which the decoder masks. Both
the ONNX runtime and the PyTorch decoder go through it, on numpy arrays or torch tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Tensor = Any  # a numpy array or a torch tensor: only .shape, .reshape and slicing are used


def image_sizes(mask: np.ndarray) -> list[tuple[int, int]]:
    """(height, width) of each image's real pixels in an (N, H, W) bool mask (True on real pixels)."""
    sizes = []
    for m in mask:
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        sizes.append((int(rows[-1]) + 1 if len(rows) else 1, int(cols[-1]) + 1 if len(cols) else 1))
    return sizes


def encode_each(encode: Callable[[Tensor, Tensor], dict[str, Tensor]], images: Tensor, mask: Tensor,
                sizes: Sequence[tuple[int, int]], stride: int, layout: Mapping[str, Sequence],
                zeros: Callable[[tuple, Tensor], Tensor]) -> dict[str, Tensor]:
    """``encode(images, mask)`` run on each image alone, cropped to its ``sizes`` entry rounded up
    to ``stride``, and its outputs padded with zeros (False for masks) into one batch. ``layout``
    gives each output's axis labels ("batch" first, "height", "width", "length" = height x width,
    anything else kept as the encoder gives it); ``zeros(shape, like)`` makes a zero tensor of
    ``like``'s kind. A batch whose images all have one padded size is encoded as it is."""
    padded = [(-(-h // stride) * stride, -(-w // stride) * stride) for h, w in sizes]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(padded):
        groups.setdefault(size, []).append(i)
    if len(groups) == 1 and next(iter(groups)) == tuple(images.shape[-2:]):
        return encode(images, mask)
    outs = {}
    for (h, w), idx in groups.items():
        sub = idx if len(idx) > 1 else slice(idx[0], idx[0] + 1)
        outs[(h, w)] = (idx, encode(images[sub, ..., :h, :w], mask[sub, :h, :w]))
    names = list(next(iter(outs.values()))[1])
    grids = {key: _grid(out, layout) for key, (_, out) in outs.items()}
    gh, gw = max(g[0] for g in grids.values()), max(g[1] for g in grids.values())
    batch: dict[str, Tensor] = {}
    for name in names:
        labels = list(layout[name])
        if labels[0] != "batch":
            raise ValueError(f"encoder output {name} does not have the batch first: {labels}")
        first = next(iter(outs.values()))[1][name]
        full = {"height": gh, "width": gw, "length": gh * gw}
        shape = (len(sizes),) + tuple(full.get(lab, first.shape[a]) for a, lab in enumerate(labels) if a)
        target = zeros(shape, first)
        for key, (idx, out) in outs.items():
            _place(target, out[name], idx, labels, grids[key], (gh, gw))
        batch[name] = target
    return batch


def _grid(outputs: dict[str, Tensor], layout: Mapping[str, Sequence]) -> tuple[int, int]:
    """The feature map's (height, width), read off an output that has both axes."""
    for name, t in outputs.items():
        labels = list(layout[name])
        if "height" in labels and "width" in labels:
            return int(t.shape[labels.index("height")]), int(t.shape[labels.index("width")])
    raise ValueError("no encoder output has both a height and a width axis, so its length axes cannot be padded")


def _place(target: Tensor, src: Tensor, rows: list[int], labels: list, grid: tuple[int, int],
           full: tuple[int, int]) -> None:
    """Copy ``src`` (the outputs of images ``rows``) into the top-left corner of their rows of ``target``."""
    if "length" in labels:  # unflatten height x width, so the copy keeps each feature at its place
        a = labels.index("length")
        src = src.reshape(tuple(src.shape[:a]) + grid + tuple(src.shape[a + 1:]))
        target = target.reshape(tuple(target.shape[:a]) + full + tuple(target.shape[a + 1:]))  # a view
        labels = labels[:a] + ["height", "width"] + labels[a + 1:]
    index: list = [rows]
    for a, lab in enumerate(labels[1:], 1):
        index.append(slice(0, src.shape[a]) if lab in ("height", "width") else slice(None))
    target[tuple(index)] = src
