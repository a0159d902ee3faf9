"""Weights that several graphs hold alike, stored once in a file beside them.

The step decoder and the scorer are two graphs of the same decoder, so they hold the same
tensors. :func:`share_weights` moves every tensor that more than one graph holds (same type,
shape and bytes) into one external-data file and points each graph at it; ONNX Runtime reads
external data from the graph's own folder (and nowhere else), the browser runtime from the
``weights`` file named in ``model.json``'s variant.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import onnx
from onnx import TensorProto

#: Offsets in the file are multiples of this (the page size), so ONNX Runtime can map the file.
ALIGN = 4096
#: Smaller tensors stay inside their graphs: sharing them saves little and costs the padding.
MIN_BYTES = 4096


def _key(t: TensorProto) -> tuple:
    return t.data_type, tuple(t.dims), hashlib.sha256(t.raw_data).digest()


def share_weights(paths: list[Path], weights: Path) -> int:
    """Store the tensors of at least :data:`MIN_BYTES` that two or more of ``paths`` hold once,
    in ``weights`` (beside the graphs), and rewrite each graph to read them from there. Returns
    the bytes no longer stored twice (0, and no file, when the graphs share nothing)."""
    if any(p.parent != weights.parent for p in paths):
        raise ValueError("the weights file must be beside the graphs that read it")
    models = [onnx.load(str(p)) for p in paths]
    held = [{_key(t) for t in m.graph.initializer if len(t.raw_data) >= MIN_BYTES} for m in models]
    shared = {k for k, n in Counter(k for keys in held for k in keys).items() if n > 1}
    if not shared:
        return 0
    placed: dict[tuple, tuple[int, int]] = {}
    saved = 0
    tmp = weights.with_name(f".{weights.name}.tmp")
    with open(tmp, "wb") as f:
        for m in models:
            for t in m.graph.initializer:
                if len(t.raw_data) < MIN_BYTES or (k := _key(t)) not in shared:
                    continue
                if k in placed:
                    saved += len(t.raw_data)
                else:
                    f.write(b"\0" * (-f.tell() % ALIGN))
                    placed[k] = (f.tell(), len(t.raw_data))
                    f.write(t.raw_data)
                offset, length = placed[k]
                t.ClearField("raw_data")
                t.data_location = TensorProto.EXTERNAL
                del t.external_data[:]
                for key, value in (("location", weights.name), ("offset", str(offset)), ("length", str(length))):
                    entry = t.external_data.add()
                    entry.key, entry.value = key, value
    os.replace(tmp, weights)
    for m, p in zip(models, paths):
        onnx.save(m, str(p))
    return saved
