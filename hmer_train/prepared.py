"""Prepared datasets: every sample rendered and preprocessed once, cached as numpy + JSON.

Training must not re-parse XML every epoch. A prepared set lives in
``<cache_root>/<key>/`` as ``images.npy`` (all model-input images, uint8, ink = 255, flattened
and concatenated) and ``index.json`` (names, shapes, offsets, canonical tokens, per-sample
errors). The key hashes the source fingerprint, the render and preprocessing settings and the
format version, so changing any of them builds a new cache. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hmer_runtime.errors import HmerError, input_error
from hmer_runtime.preprocess import PreprocessConfig
from hmer_runtime.render import RenderConfig, model_input
from hmer_runtime.sources import iter_source, load_labelled, source_fingerprint

PREPARED_FORMAT = 1
DEFAULT_CACHE = Path(os.environ.get("HMER_CACHE", Path.home() / ".cache" / "hmer"))


@dataclass
class PreparedSet:
    """A source's samples as model-input images + canonical tokens."""

    names: list[str]
    tokens: list[list[str]]
    shapes: np.ndarray  # (n, 2) int
    offsets: np.ndarray  # (n,) int
    pixels: np.ndarray  # flat uint8
    errors: list[str] = field(default_factory=list)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.names)

    def image(self, i: int) -> np.ndarray:
        """Model input of sample ``i`` as float32 (H, W), ink 1.0."""
        h, w = self.shapes[i]
        o = self.offsets[i]
        return self.pixels[o:o + h * w].reshape(h, w).astype(np.float32) / 255.0

    def select(self, keep: np.ndarray) -> PreparedSet:
        """A view restricted to the indices in ``keep`` (pixels are shared, not copied)."""
        keep = np.asarray(keep, dtype=np.int64)
        return PreparedSet([self.names[i] for i in keep], [self.tokens[i] for i in keep],
                           self.shapes[keep], self.offsets[keep], self.pixels, self.errors, self.path)


def sample_image(sample, render: RenderConfig, pre: PreprocessConfig) -> np.ndarray:
    """Model-input image of a source sample (ink is rendered first, images are read)."""
    return model_input(sample.load(), render, pre, sample.name)


def cache_key(source: str | Path, render: RenderConfig, pre: PreprocessConfig) -> str:
    blob = json.dumps({"format": PREPARED_FORMAT, "source": source_fingerprint(source),
                       "render": render.to_dict(), "preprocess": pre.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def prepare(source: str | Path, render: RenderConfig = RenderConfig(),
            pre: PreprocessConfig = PreprocessConfig(), cache_root: str | Path = DEFAULT_CACHE,
            progress: bool = True, workers: int | None = None) -> PreparedSet:
    """Load the prepared set for ``source``, building (and caching) it if needed.

    ``workers``: processes that render and preprocess while this one parses (default: one per
    CPU core, at most 16; 0 or 1 renders in this process). The result does not depend on it."""
    directory = Path(cache_root) / cache_key(source, render, pre)
    if (directory / "index.json").is_file() and (directory / "images.npy").is_file():
        return load_prepared(directory)
    workers = min(os.cpu_count() or 1, 16) if workers is None else workers
    names, tokens, shapes, chunks, errors = [], [], [], [], []

    def jobs():
        for sample in iter_source(source):
            try:
                obj, toks = load_labelled(sample)
            except HmerError as e:  # load_labelled names every failure
                errors.append(str(e))
                continue
            yield obj, toks, sample.name, render, pre

    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(_render_job, jobs(), chunksize=16) if pool else map(_render_job, jobs())
        for name, toks, img, error in tqdm(results, desc=f"preparing {Path(source).name}", unit="expr",
                                           disable=not progress, leave=False):
            if error is not None:
                errors.append(error)
                continue
            names.append(name)
            tokens.append(toks)
            shapes.append(img.shape)
            chunks.append(img.ravel())
    finally:
        if pool:
            pool.terminate()
    sizes = np.array([c.size for c in chunks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else np.zeros(0, np.int64)
    pixels = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    _write_atomic(directory, pixels, {
        "format": PREPARED_FORMAT, "source": str(source), "render": render.to_dict(),
        "preprocess": pre.to_dict(), "names": names, "tokens": [" ".join(t) for t in tokens],
        "shapes": [list(s) for s in shapes], "offsets": offsets.tolist(), "errors": errors,
    })
    return load_prepared(directory)


def _render_job(job: tuple) -> tuple[str, list[str], np.ndarray | None, str | None]:
    """(name, tokens, uint8 model input or None, error or None) of one parsed sample."""
    obj, toks, name, render, pre = job
    try:
        img = model_input(obj, render, pre, name)
    except Exception as e:  # noqa: BLE001 - one sample's failure, named after its file, never the set's
        return name, toks, None, str(input_error(name, e))
    return name, toks, np.round(img * 255).astype(np.uint8), None


def _write_atomic(directory: Path, pixels: np.ndarray, index: dict) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".building-"))
    np.save(tmp / "images.npy", pixels)
    (tmp / "index.json").write_text(json.dumps(index))
    try:
        os.replace(tmp, directory)
    except OSError:  # another process finished first; keep theirs
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


def load_prepared(directory: str | Path) -> PreparedSet:
    directory = Path(directory)
    index = json.loads((directory / "index.json").read_text())
    if index.get("format") != PREPARED_FORMAT:
        raise HmerError(str(directory), f"prepared-set format {index.get('format')} is not {PREPARED_FORMAT}")
    return PreparedSet(
        names=index["names"], tokens=[t.split(" ") for t in index["tokens"]],
        shapes=np.array(index["shapes"], dtype=np.int64).reshape(-1, 2),
        offsets=np.array(index["offsets"], dtype=np.int64),
        pixels=np.load(directory / "images.npy", mmap_mode="r"), errors=index["errors"], path=directory)


def token_counts(sets: list[PreparedSet]) -> Counter:
    return Counter(t for s in sets for seq in s.tokens for t in seq)
