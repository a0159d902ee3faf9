"""Reading input files with bounds: every path an input comes from is read here.

A path may name anything: a FIFO (reading it waits for a writer forever), a character device
(``/dev/zero`` never ends), a file without read permission, or a file far larger than any input.
:func:`read_bounded` refuses what is not a regular file before reading, and reads at most the
limit; :func:`walk_files` lists a folder's inputs and reports sub-folders it cannot read instead of
skipping them silently.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hmer_runtime.errors import TOO_LARGE, HmerError, InputError, input_error

#: Largest image file read (bytes); the pixel limit in preprocess.MAX_IMAGE_PIXELS applies after decoding.
MAX_IMAGE_BYTES = 64 * 1024 * 1024


def read_bounded(path: str | os.PathLike, limit: int, name: str | None = None,
                 error: type[HmerError] = InputError) -> bytes:
    """The bytes of the regular file ``path``; an ``error`` (InkError for InkML, ImageError for
    images) naming ``name`` (default: the path) when it is missing, unreadable, not a regular
    file, or larger than ``limit`` bytes."""
    name = name or str(path)
    try:
        return _read_bounded(path, limit, name)
    except HmerError as e:
        raise (e if isinstance(e, error) else error(e.source, e.message)) from e.__cause__


def _read_bounded(path: str | os.PathLike, limit: int, name: str) -> bytes:
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError as e:
        raise InputError(name, "no such file") from e
    except IsADirectoryError as e:
        raise InputError(name, "is a directory") from e
    except OSError as e:
        raise input_error(name, e) from e
    with os.fdopen(fd, "rb") as f:
        try:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise InputError(name, "is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise InputError(name, "not a regular file (a FIFO, device or socket is never read)")
            if st.st_size > limit:
                raise InputError(name, f"file is {st.st_size} bytes, over the {limit}-byte limit", TOO_LARGE)
            data = f.read(limit + 1)  # the file may have grown since fstat
        except HmerError:
            raise
        except OSError as e:
            raise input_error(name, e) from e
    if len(data) > limit:
        raise InputError(name, f"file is over the {limit}-byte limit", TOO_LARGE)
    return data


def walk_files(root: str | os.PathLike, suffixes: tuple[str, ...]) -> tuple[list[Path], list[InputError]]:
    """Files under ``root`` (recursively, sorted) whose names end in one of ``suffixes``, and an
    error for each sub-folder that could not be listed."""
    files: list[Path] = []
    errors: list[InputError] = []

    def unreadable(e: OSError) -> None:
        errors.append(input_error(e.filename or str(root), e))

    for folder, dirs, names in os.walk(root, onerror=unreadable):
        dirs.sort()
        files += [Path(folder) / n for n in names if n.lower().endswith(suffixes)]
    return sorted(files), errors


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, so a reader (or a
    run that is killed and resumed) sees the old file or the whole new one, never half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_writable(path: str | os.PathLike) -> None:
    """InputError naming ``path`` unless a file can be written there (its folder exists and takes
    a new file, and ``path`` is not a folder): checked before long work whose result goes there."""
    path = Path(path)
    if path.is_dir():
        raise InputError(str(path), "is a folder, not a file to write")
    probe = path.with_name(f".{path.name}.probe")
    try:
        with open(probe, "wb"):
            pass
        probe.unlink()
    except OSError as e:
        raise InputError(str(path), f"cannot be written ({e.strerror or e})") from e
