"""Reading CROHME-style InkML: traces, trace groups, the ``truth`` annotation and the file id.

XML is parsed with :mod:`defusedxml`, so DTDs and entity declarations (billion laughs, external
entities) are refused rather than expanded, and files over :data:`MAX_INKML_BYTES` are refused
before parsing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from hmer_runtime.errors import TOO_LARGE, InkError
from hmer_runtime.files import read_bounded

#: The largest InkML document we parse (the biggest CROHME file is ~0.5 MB).
MAX_INKML_BYTES = 16 * 1024 * 1024
#: Largest coordinate span accepted (pen units); real ink spans at most ~1e6.
MAX_INK_SPAN = 1e12


@dataclass
class SymbolGroup:
    """A ``traceGroup``: one symbol's label and the ids of the traces that draw it."""

    label: str
    trace_ids: list[str]


@dataclass
class Ink:
    """Online handwriting: a list of strokes, each an (n, 2+) float array of X, Y (+ extra channels)."""

    traces: list[np.ndarray]
    truth: str | None = None
    id: str = ""
    channels: list[str] = field(default_factory=lambda: ["X", "Y"])
    trace_ids: list[str] = field(default_factory=list)
    groups: list[SymbolGroup] = field(default_factory=list)

    @classmethod
    def from_strokes(cls, strokes: list, id: str = "strokes") -> Ink:
        """Build ink from nested lists ``[[[x, y], ...], ...]`` (the online signal of a drawing pad)."""
        traces = []
        for i, stroke in enumerate(strokes):
            try:
                arr = np.asarray(stroke, dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise InkError(id, f"stroke {i} is not a list of [x, y] points") from e
            if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] < 2:
                raise InkError(id, f"stroke {i} is not a non-empty list of [x, y] points")
            traces.append(arr)
        return cls(traces=traces, id=id)


def _local(tag: str) -> str:
    """Tag name without its namespace: CROHME files use the InkML namespace, some tools none."""
    return tag.rsplit("}", 1)[-1]


def _parse_trace(text: str, n_channels: int, where: str) -> np.ndarray:
    rows = []
    for point in text.strip().split(","):
        values = point.split()
        if not values:
            continue
        try:
            row = [float(v) for v in values]
        except ValueError as e:
            raise InkError(where, f"bad trace point {point.strip()[:40]!r}") from e
        rows.append(row)
    if not rows:
        return np.zeros((0, max(n_channels, 2)))
    width = min(len(r) for r in rows)
    if width < 2:
        raise InkError(where, "trace point with fewer than 2 coordinates")
    return np.array([r[:width] for r in rows], dtype=np.float64)


def _strip_math(truth: str) -> str:
    truth = truth.strip()
    if truth.startswith("$") and truth.endswith("$") and len(truth) >= 2:
        truth = truth.strip("$").strip()
    return truth


def _fromstring(data: bytes):
    try:
        return SafeET.fromstring(data)
    except SafeET.ParseError:
        # A few CROHME files (e.g. MfrDB0104) carry a stray non-UTF-8 byte inside a MathML
        # annotation; replacing undecodable bytes recovers them without touching the traces.
        fixed = data.decode("utf-8", errors="replace").encode("utf-8")
        if fixed == data:
            raise
        return SafeET.fromstring(fixed)


def parse_inkml(data: bytes, name: str = "<bytes>") -> Ink:
    """Parse an InkML document. Raises :class:`InkError` naming ``name`` on any problem."""
    if len(data) > MAX_INKML_BYTES:
        raise InkError(name, f"InkML is {len(data)} bytes, over the {MAX_INKML_BYTES}-byte limit", TOO_LARGE)
    if not data.strip():
        raise InkError(name, "empty file")
    try:
        root = _fromstring(data)
    except RecursionError as e:
        raise InkError(name, "XML nested too deeply") from e
    except DefusedXmlException as e:
        raise InkError(name, f"refused unsafe XML ({type(e).__name__})") from e
    except SafeET.ParseError as e:
        raise InkError(name, f"not well-formed XML: {e}") from e
    if _local(root.tag) != "ink":
        raise InkError(name, f"root element is <{_local(root.tag)}>, not <ink>")

    channels = ["X", "Y"]
    truth = None
    file_id = ""
    traces: list[np.ndarray] = []
    trace_ids: list[str] = []
    groups: list[SymbolGroup] = []
    for child in root:
        tag = _local(child.tag)
        if tag == "traceFormat":
            found = [c.get("name", "") for c in child if _local(c.tag) == "channel"]
            if found:
                channels = found
        elif tag == "annotation":
            kind = child.get("type")
            if kind == "truth":
                truth = _strip_math(child.text or "")
            elif kind == "UI":
                file_id = (child.text or "").strip()
        elif tag == "trace":
            traces.append(_parse_trace(child.text or "", len(channels), name))
            trace_ids.append(child.get("id", str(len(trace_ids))))
        elif tag == "traceGroup":
            try:
                groups.extend(_symbol_groups(child))
            except RecursionError as e:
                raise InkError(name, "traceGroups nested too deeply") from e
    if not file_id:
        file_id = Path(name).stem
    return Ink(traces=traces, truth=truth, id=file_id, channels=channels, trace_ids=trace_ids,
               groups=groups)


def _symbol_groups(group) -> list[SymbolGroup]:
    """Flatten nested traceGroups into symbol groups (those that reference traces)."""
    out = []
    for sub in group:
        if _local(sub.tag) != "traceGroup":
            continue
        label = ""
        refs = []
        for item in sub:
            t = _local(item.tag)
            if t == "annotation" and item.get("type") == "truth":
                label = (item.text or "").strip()
            elif t == "traceView":
                refs.append(item.get("traceDataRef", ""))
        if refs:
            out.append(SymbolGroup(label=label, trace_ids=refs))
        out.extend(_symbol_groups(sub))
    return out


def read_inkml(path: str | os.PathLike) -> Ink:
    """Read an InkML file from disk: a regular file of at most MAX_INKML_BYTES (see files.read_bounded)."""
    path = Path(path)
    ink = parse_inkml(read_bounded(path, MAX_INKML_BYTES, error=InkError), str(path))
    if not ink.id:
        ink.id = path.stem
    return ink


def validate_ink(ink: Ink) -> None:
    """Raise :class:`InkError` for ink that cannot be rendered: no traces, NaN/inf, zero extent."""
    if not ink.traces or all(len(t) == 0 for t in ink.traces):
        raise InkError(ink.id, "no traces")
    pts = np.concatenate([t[:, :2] for t in ink.traces if len(t)])
    if not np.all(np.isfinite(pts)):
        raise InkError(ink.id, "NaN or infinite coordinates")
    with np.errstate(over="ignore"):
        extent = pts.max(axis=0) - pts.min(axis=0)
    if len(pts) == 1:
        raise InkError(ink.id, "a single point")
    if not np.all(np.isfinite(extent)) or float(extent.max()) > MAX_INK_SPAN:
        raise InkError(ink.id, f"coordinates span {float(extent.max()):.3g}, beyond the {MAX_INK_SPAN:.0g} an "
                               "ink file can hold meaningfully")
    if float(extent.max()) <= 0:
        raise InkError(ink.id, "all points coincide (zero-size ink)")


def inkml_bytes(ink: Ink) -> bytes:
    """``ink`` as a CROHME-style InkML document: X/Y traces, the ``truth`` and ``UI`` annotations,
    and one ``traceGroup`` per symbol group; :func:`parse_inkml` reads it back."""
    from xml.sax.saxutils import escape

    ids = ink.trace_ids or [str(i) for i in range(len(ink.traces))]
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<ink xmlns="http://www.w3.org/2003/InkML">',
             '<traceFormat><channel name="X" type="decimal"/><channel name="Y" type="decimal"/></traceFormat>']
    if ink.truth is not None:
        lines.append(f'<annotation type="truth">${escape(ink.truth)}$</annotation>')
    lines.append(f'<annotation type="UI">{escape(ink.id)}</annotation>')
    for tid, trace in zip(ids, ink.traces):
        points = ", ".join(f"{x:.2f} {y:.2f}" for x, y in np.asarray(trace)[:, :2])
        lines.append(f'<trace id="{escape(tid)}">{points}</trace>')
    if ink.groups:
        lines.append('<traceGroup><annotation type="truth">Segmentation</annotation>')
        for group in ink.groups:
            refs = "".join(f'<traceView traceDataRef="{escape(t)}"/>' for t in group.trace_ids)
            lines.append(f'<traceGroup><annotation type="truth">{escape(group.label)}</annotation>{refs}</traceGroup>')
        lines.append("</traceGroup>")
    lines.append("</ink>")
    return ("\n".join(lines) + "\n").encode("utf-8")
