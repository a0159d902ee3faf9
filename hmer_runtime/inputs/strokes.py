"""Stroke JSON, the pad's and the HTTP API's ink format: ``{"strokes": [[[x, y], ...], ...]}``.

The same reader serves a request body and a ``.json`` file given to ``hmer-run``, with the same
bounds, so a file is refused exactly where a request would be.
"""

from __future__ import annotations

import json
from pathlib import Path

from hmer_runtime.errors import TOO_LARGE, InkError
from hmer_runtime.files import read_bounded
from hmer_runtime.inputs.inkml import Ink

#: Most strokes and points one ink may hold (a full page of writing is a few thousand points).
MAX_STROKES = 500
MAX_POINTS = 50_000
#: Largest stroke JSON file read, in bytes (50 000 points as text is about 1 MB).
MAX_STROKE_FILE_BYTES = 16 * 1024 * 1024


def strokes_to_ink(body, name: str = "strokes", max_strokes: int = MAX_STROKES,
                   max_points: int = MAX_POINTS) -> Ink:
    """Ink from parsed stroke JSON (an object with ``strokes``, or the bare list); InkError naming
    ``name`` when it is malformed or over the stroke and point bounds (status 413)."""
    strokes = body.get("strokes") if isinstance(body, dict) else body
    if not isinstance(strokes, list) or not strokes:
        raise InkError(name, "expected a non-empty list of strokes [[[x, y], ...], ...]")
    if len(strokes) > max_strokes:
        raise InkError(name, f"{len(strokes)} strokes, over the limit of {max_strokes}", TOO_LARGE)
    points = sum(len(s) if isinstance(s, list) else 0 for s in strokes)
    if points > max_points:
        raise InkError(name, f"{points} points, over the limit of {max_points}", TOO_LARGE)
    return Ink.from_strokes(strokes, id=name)


def read_strokes(path: str | Path) -> Ink:
    """Ink from a stroke JSON file, e.g. ``examples/strokes/x2.json``."""
    name = str(path)
    try:
        body = strict_json(read_bounded(path, MAX_STROKE_FILE_BYTES))
    except ValueError as e:
        raise InkError(name, f"not stroke JSON ({e})") from e
    return strokes_to_ink(body, name)


def strict_json(data: bytes | str):
    """``json.loads`` that refuses NaN and Infinity; every malformed document (bad UTF-8, nesting
    too deep, integers past Python's digit limit) is a ValueError."""
    def refuse(token: str):
        raise ValueError(f"{token} is not a JSON number")
    try:
        return json.loads(data, parse_constant=refuse)
    except RecursionError:
        raise ValueError("nested too deeply") from None
