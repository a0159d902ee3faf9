"""Errors that name the input they are about, so a CLI can print one clear line per bad input."""

from __future__ import annotations

#: HTTP statuses an error can carry (``HmerError.status``), for the services that answer it.
BAD_REQUEST, TOO_LARGE, NOTHING_TO_READ = 400, 413, 422


class HmerError(Exception):
    """Base class: ``str(err)`` is a complete one-line message naming the input. ``status`` is
    the HTTP status a service answers it with: input over a size limit is TOO_LARGE, readable
    input with nothing in it to recognise NOTHING_TO_READ, anything else BAD_REQUEST."""

    status = BAD_REQUEST

    def __init__(self, source: str, message: str, status: int | None = None):
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message
        if status is not None:
            self.status = status

    def __reduce__(self):
        # Rebuilt from its parts when it crosses processes (by default pickle would call
        # __init__ with the whole message alone, which fails, and a multiprocessing pool hangs).
        return type(self), (self.source, self.message, self.__dict__.get("status"))


class InkError(HmerError):
    """Unreadable, unsafe or degenerate ink (InkML or strokes)."""


class ImageError(HmerError):
    """An image that cannot be decoded or is too large."""


class DatasetError(HmerError):
    """A dataset that is missing or malformed."""


class ModelError(HmerError):
    """A model directory or checkpoint that is missing, broken or of the wrong kind."""


class InputError(HmerError):
    """One input (a file, an upload, a sample of a dataset) that could not be read or prepared."""


def input_error(name: str, exc: BaseException) -> HmerError:
    """``exc``, raised while reading or preparing the input ``name``, as one HmerError naming it.

    Every per-input failure goes through here, so a bad input is one clear line in a batch and
    never stops the rest: an HmerError about something else (say, the InkML's own id) is re-named
    after the input, and anything else (a decoder's ValueError, RecursionError, MemoryError,
    PermissionError, ...) becomes an :class:`InputError` saying what happened.
    """
    if isinstance(exc, HmerError):
        return exc if exc.source == name else type(exc)(name, exc.message, exc.status)
    if isinstance(exc, RecursionError):
        return InputError(name, "nested too deeply to read")
    if isinstance(exc, MemoryError):
        return InputError(name, "too large to process in memory")
    if isinstance(exc, PermissionError):
        return InputError(name, "permission denied")
    if isinstance(exc, OSError):
        return InputError(name, f"cannot read: {exc.strerror or exc}")
    return InputError(name, f"{type(exc).__name__}: {str(exc)[:200] or 'failed'}")
