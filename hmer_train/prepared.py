"""Prepared datasets: every sample rendered and preprocessed once, cached as numpy + JSON.

Training must not re-parse XML every epoch. A prepared set lives in
``<cache_root>/<key>/`` as ``images.npy`` (all model-input images, uint8, ink = 255, flattened
and concatenated) and ``index.json`` (names, shapes, offsets, canonical tokens, per-sample
errors). Ink samples also keep their strokes, so training can augment the ink and render it
anew (``ink.npy``: every point as float32 X, Y relative to its expression's corner, and
``stroke_lengths`` in the index). The key hashes the source fingerprint, the render and preprocessing settings and the
format version, so changing any of them builds a new cache. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hmer_runtime.errors import HmerError, input_error
from hmer_runtime.inputs.inkml import Ink
from hmer_runtime.inputs.preprocess import PreprocessConfig
from hmer_runtime.inputs.render import RenderConfig, model_input
from hmer_runtime.inputs.sources import iter_source, load_labelled, source_fingerprint, source_not_found

PREPARED_FORMAT = 2
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
    stroke_lengths: list[list[int]] | None = None  # per sample; empty for an image sample
    ink_offsets: np.ndarray | None = None  # (n,) first point of each sample in ``points``
    points: np.ndarray | None = None  # (P, 2) float32

    def __len__(self) -> int:
        return len(self.names)

    def image(self, i: int) -> np.ndarray:
        """Model input of sample ``i`` as float32 (H, W), ink 1.0."""
        h, w = self.shapes[i]
        o = self.offsets[i]
        return self.pixels[o:o + h * w].reshape(h, w).astype(np.float32) / 255.0

    def ink(self, i: int) -> Ink | None:
        """Sample ``i``'s strokes (coordinates relative to its top-left corner), or None when it
        was an image."""
        if self.stroke_lengths is None or not self.stroke_lengths[i]:
            return None
        lengths = self.stroke_lengths[i]
        o = int(self.ink_offsets[i])
        pts = np.asarray(self.points[o:o + sum(lengths)], dtype=np.float64)
        return Ink(traces=np.split(pts, np.cumsum(lengths)[:-1]), id=self.names[i])

    def concat(self, other: PreparedSet) -> PreparedSet:
        """This set's samples followed by ``other``'s (a new set; pixels and points are copied)."""
        def strokes(s: PreparedSet) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
            if s.stroke_lengths is None:  # an image source: no ink for any sample
                return [[] for _ in s.names], np.zeros(len(s), np.int64), np.zeros((0, 2), np.float32)
            return s.stroke_lengths, s.ink_offsets, s.points

        has_ink = self.stroke_lengths is not None or other.stroke_lengths is not None
        (lengths_a, at_a, points_a), (lengths_b, at_b, points_b) = strokes(self), strokes(other)
        return PreparedSet(
            self.names + other.names, self.tokens + other.tokens, np.concatenate([self.shapes, other.shapes]),
            np.concatenate([self.offsets, other.offsets + len(self.pixels)]),
            np.concatenate([self.pixels, other.pixels]), self.errors + other.errors, self.path,
            lengths_a + lengths_b if has_ink else None,
            np.concatenate([at_a, at_b + len(points_a)]) if has_ink else None,
            np.concatenate([points_a, points_b.astype(points_a.dtype)]) if has_ink else None)

    def select(self, keep: np.ndarray) -> PreparedSet:
        """A view restricted to the indices in ``keep`` (pixels are shared, not copied)."""
        keep = np.asarray(keep, dtype=np.int64)
        has_ink = self.stroke_lengths is not None
        return PreparedSet([self.names[i] for i in keep], [self.tokens[i] for i in keep],
                           self.shapes[keep], self.offsets[keep], self.pixels, self.errors, self.path,
                           [self.stroke_lengths[i] for i in keep] if has_ink else None,
                           self.ink_offsets[keep] if has_ink else None, self.points)


def cache_key(source: str | Path, render: RenderConfig, pre: PreprocessConfig, scale: float = 1.0) -> str:
    key = {"format": PREPARED_FORMAT, "source": source_fingerprint(source), "render": render.to_dict(),
           "preprocess": pre.to_dict()}
    if scale != 1.0:  # a view's size (render.model_input); one-size sets keep their keys
        key["scale"] = scale
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def prepare(source: str | Path, render: RenderConfig = RenderConfig(),
            pre: PreprocessConfig = PreprocessConfig(), cache_root: str | Path = DEFAULT_CACHE,
            progress: bool | None = True, workers: int | None = None, limit: int | None = None,
            scale: float = 1.0) -> PreparedSet:
    """Load the prepared set for ``source``, building (and caching) it if needed.

    ``workers``: processes that render and preprocess while this one parses (default: one per
    CPU core, at most 16; 0 or 1 renders in this process). The result does not depend on it.
    ``limit``: only the first ``limit`` usable samples, unless the whole set is already prepared.
    ``progress`` None: a bar only when stderr is a terminal. ``scale``: each sample read at that
    multiple of the model's size (``render.model_input``)."""
    if not Path(source).exists():  # before any progress bar or worker pool
        raise source_not_found(source)
    directory = Path(cache_root) / cache_key(source, render, pre, scale)
    if (directory / "index.json").is_file() and (directory / "images.npy").is_file():
        whole = load_prepared(directory)
        return whole.select(np.arange(min(limit, len(whole)))) if limit else whole
    if limit:
        directory = directory.with_name(f"{directory.name}-first{limit}")
        if (directory / "index.json").is_file() and (directory / "images.npy").is_file():
            return load_prepared(directory)
    workers = min(os.cpu_count() or 1, 16) if workers is None else workers
    names, tokens, shapes, chunks, errors = [], [], [], [], []
    stroke_lengths, ink_chunks = [], []

    failed: list[Exception] = []

    def jobs():
        try:
            for sample in iter_source(source):
                try:
                    obj, toks = load_labelled(sample)
                except HmerError as e:  # load_labelled names every failure
                    errors.append(str(e))
                    continue
                yield obj, toks, sample.name, render, pre, scale
        except Exception as e:  # noqa: BLE001 - the source itself failed: raised below, not in the pool's thread
            failed.append(e)

    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(_render_job, jobs(), chunksize=16) if pool else map(_render_job, jobs())
        for name, toks, img, error, traces in tqdm(results, desc=f"preparing {Path(source).name}", unit="expr",
                                           disable=None if progress is None else not progress, leave=False):
            if error is not None:
                errors.append(error)
                continue
            names.append(name)
            tokens.append(toks)
            shapes.append(img.shape)
            chunks.append(img.ravel())
            stroke_lengths.append([len(t) for t in traces])
            ink_chunks.extend(traces)
            if limit and len(names) >= limit:
                break
    finally:
        if pool:
            pool.terminate()
    if failed:
        raise failed[0]
    sizes = np.array([c.size for c in chunks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else np.zeros(0, np.int64)
    pixels = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    points = np.concatenate(ink_chunks) if ink_chunks else np.zeros((0, 2), np.float32)
    _write_atomic(directory, pixels, points, {
        "format": PREPARED_FORMAT, "source": str(source), "render": render.to_dict(),
        "preprocess": pre.to_dict(), "scale": scale, "names": names, "tokens": [" ".join(t) for t in tokens],
        "shapes": [list(s) for s in shapes], "offsets": offsets.tolist(), "errors": errors,
        "stroke_lengths": stroke_lengths,
    })
    return load_prepared(directory)


def _render_job(job: tuple) -> tuple[str, list[str], np.ndarray | None, str | None, list[np.ndarray]]:
    """(name, tokens, uint8 model input or None, error or None, strokes) of one parsed sample;
    an ink sample's strokes are float32 X, Y from its top-left corner (none for an image)."""
    obj, toks, name, render, pre, scale = job
    traces = []
    if isinstance(obj, Ink):
        traces = [t[:, :2] for t in obj.traces if len(t)]
        lo = np.concatenate(traces).min(axis=0) if traces else 0.0
        traces = [(t - lo).astype(np.float32) for t in traces]
    try:
        img = model_input(obj, render, pre, name, scale)
    except Exception as e:  # noqa: BLE001 - one sample's failure, named after its file, never the set's
        return name, toks, None, str(input_error(name, e)), []
    return name, toks, np.round(img * 255).astype(np.uint8), None, traces


def _write_atomic(directory: Path, pixels: np.ndarray, points: np.ndarray, index: dict) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".building-"))
    np.save(tmp / "images.npy", pixels)
    np.save(tmp / "ink.npy", points)
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
    lengths = index["stroke_lengths"]
    ink_offsets = np.concatenate([[0], np.cumsum([sum(s) for s in lengths])[:-1]]).astype(np.int64) \
        if lengths else np.zeros(0, np.int64)
    return PreparedSet(
        names=index["names"], tokens=[t.split(" ") for t in index["tokens"]],
        shapes=np.array(index["shapes"], dtype=np.int64).reshape(-1, 2),
        offsets=np.array(index["offsets"], dtype=np.int64),
        pixels=np.load(directory / "images.npy", mmap_mode="r"), errors=index["errors"], path=directory,
        stroke_lengths=lengths, ink_offsets=ink_offsets, points=np.load(directory / "ink.npy", mmap_mode="r"))
