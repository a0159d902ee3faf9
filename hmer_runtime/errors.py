"""Errors that name the input they are about, so a CLI can print one clear line per bad input."""

from __future__ import annotations


class HmerError(Exception):
    """Base class: ``str(err)`` is a complete one-line message naming the input."""

    def __init__(self, source: str, message: str):
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


class InkError(HmerError):
    """Unreadable, unsafe or degenerate ink (InkML or strokes)."""


class ImageError(HmerError):
    """An image that cannot be decoded or is too large."""


class DatasetError(HmerError):
    """A dataset that is missing or malformed."""


class ModelError(HmerError):
    """A model directory or checkpoint that is missing, broken or of the wrong kind."""
