"""Data sources: where labelled expressions come from, and how ``--dataset NAME`` is resolved.

A source is any of:

* a folder of ``.inkml`` files (searched recursively), or a ``.tar.gz``/``.tgz``/``.tar``/``.zip``
  archive of them;
* an image folder with a label file: ``caption.txt`` (CoMER/BTTR style, ``name<TAB>tokens``,
  images in ``images/`` or beside it) or HME100K style (``<split>_images/`` + ``<split>_labels.txt``).

Each yields :class:`Sample` objects whose ``load()`` returns an :class:`~hmer_runtime.inputs.inkml.Ink`
or a PIL image; errors are per sample, so one bad file never stops a whole dataset.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hmer_runtime.errors import TOO_LARGE, DatasetError, HmerError, InkError, input_error
from hmer_runtime.files import read_bounded, walk_files
from hmer_runtime.inputs.inkml import MAX_INKML_BYTES, Ink, parse_inkml, read_inkml

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
LABEL_FILES = ("caption.txt", "labels.txt")
#: Largest label file read (bytes): HME100K's training labels are about 10 MB.
MAX_LABEL_BYTES = 256 * 1024 * 1024


@dataclass
class Sample:
    """One expression of a source; ``latex`` is None for InkML without a truth annotation."""

    name: str
    latex: str | None
    kind: str  # "ink" or "image"
    load: Callable[[], object]
    origin: str = ""  # where its label is, when not in the sample itself ("caption.txt:12")


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _failed_sample(name: str, err: HmerError) -> Sample:
    """A sample whose ``load()`` raises ``err``: the failure stays with its input."""
    return Sample(name, None, "ink", lambda: (_ for _ in ()).throw(err))


def _ink_sample(name: str, loader: Callable[[], Ink]) -> Sample:
    # InkML carries its own label, so reading the label means parsing the file once here.
    try:
        ink = loader()
    except Exception as e:  # noqa: BLE001 - any failure is this sample's, named (errors.input_error)
        return _failed_sample(name, input_error(name, e))
    return Sample(name, ink.truth, "ink", lambda: ink)


def _archive_samples(entries: Iterator[tuple[str, int, Callable[[], bytes]]]) -> Iterator[Sample]:
    """Samples of an archive's InkML members, given as (name, size, read); oversized ones are refused
    before they are read."""
    for name, size, read in entries:
        if size > MAX_INKML_BYTES:
            yield _ink_sample(name, lambda n=name, s=size: (_ for _ in ()).throw(
                InkError(n, f"InkML is {s} bytes, over the {MAX_INKML_BYTES}-byte limit", TOO_LARGE)))
            continue
        yield _ink_sample(name, lambda r=read, n=name: parse_inkml(r(), n))


def _iter_tar(path: Path) -> Iterator[Sample]:
    with tarfile.open(path) as tar:
        yield from _archive_samples((m.name, m.size, lambda m=m: tar.extractfile(m).read()) for m in tar
                                    if m.isfile() and m.name.lower().endswith(".inkml"))


def _iter_zip(path: Path) -> Iterator[Sample]:
    with zipfile.ZipFile(path) as zf:
        yield from _archive_samples((i.filename, i.file_size, lambda i=i: zf.read(i)) for i in zf.infolist()
                                    if not i.is_dir() and i.filename.lower().endswith(".inkml"))


def read_labels(label_file: Path) -> list[tuple[int, str, str] | tuple[int, HmerError]]:
    """``name<TAB>latex`` lines (whitespace after the first field if there is no tab), as
    (line number, name, latex); a line that cannot be read (not UTF-8, no label) is
    (line number, error naming the file and line), so the rest of the file still loads."""
    out: list = []
    data = read_bounded(label_file, MAX_LABEL_BYTES, error=DatasetError)
    for lineno, raw in enumerate(data.splitlines(), 1):
        where = f"{label_file}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            out.append((lineno, DatasetError(where, "not UTF-8 text")))
            continue
        if not line.strip():
            continue
        if "\t" in line:
            name, latex = line.split("\t", 1)
        else:
            parts = line.split(None, 1)
            if len(parts) != 2:
                out.append((lineno, DatasetError(where, "expected 'name<TAB>latex'")))
                continue
            name, latex = parts
        out.append((lineno, name.strip(), latex.strip()))
    return out


def _find_image(image_dir: Path, name: str) -> Path:
    """The image file ``name`` names in ``image_dir``; DatasetError if it would lie outside it."""
    root = image_dir.resolve()
    direct = image_dir / name
    if Path(name).is_absolute() or not direct.resolve().is_relative_to(root):
        raise DatasetError(name, f"names a file outside the image folder {image_dir}")
    if direct.suffix.lower() in IMAGE_SUFFIXES:
        return direct
    for suffix in IMAGE_SUFFIXES:
        candidate = image_dir / (name + suffix)
        if candidate.exists():
            return candidate
    return image_dir / (name + ".png")


def _iter_images(label_file: Path, image_dir: Path) -> Iterator[Sample]:
    from hmer_runtime.inputs.preprocess import load_image

    for entry in read_labels(label_file):
        if len(entry) == 2:
            lineno, err = entry
            yield _failed_sample(f"{label_file.name}:{lineno}", err)
            continue
        lineno, name, latex = entry
        origin = f"{label_file}:{lineno}"
        try:
            path = _find_image(image_dir, name)
        except DatasetError as e:
            yield _failed_sample(Path(name).stem, DatasetError(origin, e.message))
            continue
        yield Sample(Path(name).stem, latex, "image", lambda p=path: load_image(p), origin)


def image_layout(path: Path) -> tuple[Path, Path] | None:
    """(label file, image folder) if ``path`` is an image-folder source, else None."""
    for label in LABEL_FILES:
        if (path / label).is_file():
            images = path / "images"
            return path / label, images if images.is_dir() else path
    # HME100K: <split>_images/ + <split>_labels.txt inside a folder, or the folder itself.
    for labels in sorted(path.glob("*_labels.txt")):
        split = labels.name[: -len("_labels.txt")]
        if (path / f"{split}_images").is_dir():
            return labels, path / f"{split}_images"
    return None


def iter_source(path: str | os.PathLike) -> Iterator[Sample]:
    """Every sample of a source (see module docstring). Raises DatasetError if it is none."""
    path = Path(path)
    if path.is_file() and _is_archive(path):
        try:
            yield from _iter_zip(path) if path.name.lower().endswith(".zip") else _iter_tar(path)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
            raise DatasetError(str(path), f"unreadable archive ({e})") from e
        return
    if path.is_file() and path.suffix.lower() == ".txt":  # a label file: HME100K <split>_labels.txt
        split = path.name[: -len("_labels.txt")] if path.name.endswith("_labels.txt") else ""
        images = path.parent / f"{split}_images"
        yield from _iter_images(path, images if split and images.is_dir() else path.parent / "images")
        return
    if path.is_file() and path.suffix.lower() == ".inkml":
        yield _ink_sample(str(path), lambda: read_inkml(path))
        return
    if path.is_dir():
        layout = image_layout(path)
        if layout is not None:
            yield from _iter_images(*layout)
            return
        files, unreadable = walk_files(path, (".inkml",))
        for e in unreadable:
            yield _failed_sample(e.source, e)
        if files:
            for f in files:
                yield _ink_sample(str(f.relative_to(path)), lambda f=f: read_inkml(f))
            return
        raise DatasetError(str(path), "no .inkml files and no caption.txt / *_labels.txt found")
    raise source_not_found(path)


def source_not_found(path: str | os.PathLike) -> DatasetError:
    """The error for a source path that does not exist."""
    return DatasetError(str(path), "not found (expected an InkML folder or archive, or an image folder)")


def source_fingerprint(path: str | os.PathLike) -> dict:
    """What identifies a source's content cheaply: resolved path, and size + mtime of its files."""
    path = Path(path).resolve()
    if path.is_file():
        st = path.stat()
        return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    total, newest, count = 0, 0, 0
    for f in path.rglob("*"):
        if f.is_file():
            st = f.stat()
            total += st.st_size
            newest = max(newest, st.st_mtime_ns)
            count += 1
    return {"path": str(path), "size": total, "mtime_ns": newest, "files": count}


# --- named datasets ---------------------------------------------------------------------------

DATASET_SPLITS = {
    "CROHME": ("train", "2013", "2014", "2016", "2019"),
    "HME100K": ("train", "test"),
}
DEFAULT_ROOTS = ("datasets", "../shared/data")


def _split_candidates(dataset_dir: Path, split: str) -> list[Path]:
    stem = dataset_dir.name.lower()
    names = [split, f"{stem}-{split}", f"{split}_images"]
    out = []
    for n in names:
        out.append(dataset_dir / n)
        out.extend(dataset_dir / (n + s) for s in ARCHIVE_SUFFIXES)
    return out


def resolve_split(dataset: str, split: str, roots: tuple[str, ...] | list[str] = DEFAULT_ROOTS) -> Path:
    """The source for ``split`` of a named dataset (or a path given in place of a name).

    ``CROHME`` is looked up as ``<root>/CROHME/`` (any case), holding each split as a folder,
    a ``.tar.gz``/``.zip`` or ``crohme-<split>.tar.gz``; ``HME100K`` as ``<root>/HME100K/``
    with ``<split>_images/`` + ``<split>_labels.txt`` or ``<split>/`` with ``caption.txt``.
    """
    as_path = Path(dataset)
    if as_path.exists() and (as_path.is_file() or dataset not in DATASET_SPLITS):
        if as_path.is_dir():
            found = [c for c in _split_candidates(as_path, split) if c.exists()]
            return found[0] if found else as_path
        return as_path
    looked: list[str] = []
    for root in roots:
        root_path = Path(root)
        if not root_path.is_dir():
            looked.append(f"{root}/ (missing)")
            continue
        matches = [d for d in root_path.iterdir() if d.is_dir() and d.name.lower() == dataset.lower()]
        if not matches:
            looked.append(f"{root}/{dataset}/ (missing)")
        for d in matches:
            if dataset.upper() == "HME100K":
                labels = d / f"{split}_labels.txt"
                if labels.is_file() and (d / f"{split}_images").is_dir():
                    return labels
            for c in _split_candidates(d, split):
                if c.exists():
                    return c
            looked.append(f"{d}/ (no '{split}' split)")
    expected = (
        "expected <root>/CROHME/{train,2013,2014} as InkML folders, .tar.gz/.zip archives or "
        "crohme-<split>.tar.gz, or <root>/HME100K/<split>_images/ + <split>_labels.txt"
    )
    raise DatasetError(f"{dataset}:{split}", f"not found; looked in {', '.join(looked)}; {expected}")


def load_labelled(sample: Sample) -> tuple[object, list[str]]:
    """(ink or image, LaTeX tokens) of a sample; HmerError when it is unreadable, unlabelled, or its
    LaTeX does not tokenize. Read errors come first: they are often why a label is missing."""
    from hmer_runtime.text.latex import LatexError, tokenize

    try:
        obj = sample.load()
    except HmerError:  # names its file already
        raise
    except Exception as e:  # noqa: BLE001 - any other failure, named after the sample
        raise input_error(sample.name, e) from e
    where = f" ({sample.origin})" if sample.origin else ""
    if sample.latex is None:
        raise DatasetError(sample.name, "no ground-truth LaTeX" + where)
    try:
        tokens = tokenize(sample.latex)
    except LatexError as e:
        raise DatasetError(sample.name, f"bad LaTeX{where}: {e}") from e
    except RecursionError as e:
        raise DatasetError(sample.name, f"bad LaTeX{where}: nested too deeply") from e
    if not tokens:
        raise DatasetError(sample.name, "empty ground-truth LaTeX" + where)
    return obj, tokens
