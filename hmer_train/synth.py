"""New handwritten expressions composed from a training set's own glyphs (``hmer-data synth``).

CROHME InkML labels every symbol (a ``traceGroup`` with its truth and trace references), so a
training set is also a bank of handwritten symbols from many writers (:class:`GlyphBank`). An
expression is laid out by a real math layout engine, matplotlib's mathtext (its ``"path"``
backend gives every glyph's font, size and position, and the rules of fraction bars and roots,
:func:`layout`), and each symbol's box is drawn with that symbol from a random writer
(:func:`compose`). The result is written as InkML, so everything downstream reads it like CROHME.

The LaTeX comes from the same training set's labels, recombined (:func:`recombine`: symbols
replaced within their class, braced sub-expressions swapped between labels). Nothing is taken
from a test split: :func:`check_training_source` refuses CROHME's 2013, 2014, 2016 and 2019 sets.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hmer_runtime.errors import DatasetError
from hmer_runtime.inputs.inkml import Ink, SymbolGroup
from hmer_runtime.text.latex import LatexError, compact, detokenize, fold_names, tokenize

#: Glyphs mathtext draws for symbols whose token is a command.
UNICODE_TOKENS = {
    "α": r"\alpha", "β": r"\beta", "γ": r"\gamma", "λ": r"\lambda", "μ": r"\mu", "ϕ": r"\phi", "φ": r"\phi",
    "π": r"\pi", "σ": r"\sigma", "θ": r"\theta", "Δ": r"\Delta", "∞": r"\infty", "∫": r"\int", "∑": r"\sum",
    "√": r"\sqrt", "±": r"\pm", "×": r"\times", "÷": r"\div", "⋅": r"\cdot", "·": r"\cdot", "⋯": r"\cdots",
    "…": r"\ldots", "≤": r"\leq", "≥": r"\geq", "≠": r"\neq", "→": r"\rightarrow", "∈": r"\in", "∃": r"\exists",
    "∀": r"\forall", "−": "-", "′": "'", "∣": "|", "{": r"\{", "}": r"\}",
}
#: Glyphs mathtext takes from Computer Modern fonts, whose codes are not Unicode (font stem, code).
CM_TOKENS = {("cmsy10", 48): "'"}
#: Function names mathtext sets as upright letters and CROHME labels as one symbol.
FUNCTION_GLYPHS = ("sin", "cos", "tan", "log", "lim")
#: Symbol classes for recombination: a symbol may be replaced by another of its class.
CLASSES = [list("0123456789"), list("abcdefghijkmnpqrstuvwxyz"), list("ABCEFGHILMNPRSTVXY"),
           [r"\alpha", r"\beta", r"\gamma", r"\theta", r"\lambda", r"\mu", r"\phi", r"\pi", r"\sigma"],
           ["+", "-", r"\pm", r"\times", r"\div", r"\cdot"], ["=", r"\neq", r"\leq", r"\geq", "<", ">"],
           [r"\sin", r"\cos", r"\tan", r"\log"]]
#: Test splits whose labels or ink must never reach synthetic training data.
TEST_SPLITS = ("2013", "2014", "2016", "2019")


@dataclass
class Glyph:
    """One handwritten symbol: its strokes moved to the origin (x right, y down, in the writer's
    units), its extent and where it came from."""

    strokes: list[np.ndarray]
    width: float
    height: float
    writer: str


@dataclass
class Box:
    """Where layout puts one symbol: the label and its box (x right, y up, layout pixels).
    ``stretch`` boxes (fraction bars, roots) take the glyph at the box's shape, not its own."""

    label: str
    x0: float
    y0: float
    x1: float
    y1: float
    stretch: bool = False


@dataclass
class GlyphBank:
    """Handwritten symbols by label, from the ``traceGroup``s of labelled InkML."""

    glyphs: dict[str, list[Glyph]] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)  # the expressions' LaTeX, for recombination

    def add(self, ink: Ink, per_symbol: int, rng: random.Random) -> None:
        """Add ``ink``'s symbols (reservoir-sampled to at most ``per_symbol`` a label) and its truth."""
        traces = dict(zip(ink.trace_ids, ink.traces))
        for group in ink.groups:
            parts = [traces[t][:, :2] for t in group.trace_ids if t in traces and len(traces[t])]
            if not parts or not group.label:
                continue
            pts = np.concatenate(parts)
            lo, hi = pts.min(0), pts.max(0)
            if not np.all(np.isfinite(pts)) or (hi - lo).max() <= 0:
                continue
            glyph = Glyph([p - lo for p in parts], float(hi[0] - lo[0]), float(hi[1] - lo[1]), ink.id)
            held = self.glyphs.setdefault(group.label, [])
            seen = self._seen[group.label] = self._seen.get(group.label, 0) + 1
            if len(held) < per_symbol:
                held.append(glyph)
            elif (j := rng.randrange(seen)) < per_symbol:
                held[j] = glyph
        if ink.truth:
            self.labels.append(ink.truth)

    def __post_init__(self):
        self._seen: dict[str, int] = {}

    @classmethod
    def from_source(cls, source: str | Path, per_symbol: int = 300, seed: int = 0) -> GlyphBank:
        """The bank of every labelled symbol of an InkML source (folder or archive)."""
        from hmer_runtime.inputs.sources import iter_source

        check_training_source(source)
        bank, rng = cls(), random.Random(seed)
        for sample in iter_source(source):
            try:
                ink = sample.load()
            except Exception:  # noqa: BLE001 - an unreadable sample adds nothing to the bank
                continue
            if isinstance(ink, Ink):
                bank.add(ink, per_symbol, rng)
        if not bank.glyphs:
            raise DatasetError(str(source), "no labelled symbols (traceGroups) to build a glyph bank from")
        return bank

    def pick(self, label: str, rng: random.Random) -> Glyph | None:
        held = self.glyphs.get(label)
        return rng.choice(held) if held else None


def check_training_source(source: str | Path) -> None:
    """DatasetError if ``source`` looks like one of CROHME's test splits."""
    name = Path(source).name
    if any(re.search(rf"(?<!\d){year}(?!\d)", name) for year in TEST_SPLITS):
        raise DatasetError(str(source), f"looks like a test split ({', '.join(TEST_SPLITS)}): synthetic training "
                                        "data is made from training data only")


def layout(latex: str, dpi: float = 100.0) -> list[Box]:
    """Symbol boxes of ``latex`` as mathtext typesets it; ValueError if mathtext cannot."""
    from matplotlib.ft2font import LoadFlags
    from matplotlib.mathtext import MathTextParser

    _, _, _, glyphs, rects = MathTextParser("path").parse(f"${latex}$", dpi=dpi)
    boxes, runs = [], []
    for font, size, num, index, ox, oy in glyphs:
        font.set_size(size, dpi)
        x0, y0, x1, y1 = (v / 64 for v in font.load_glyph(index, flags=LoadFlags.NO_HINTING).bbox)
        char, stem = chr(num), Path(font.fname).stem
        if char.isspace() or x1 <= x0 and y1 <= y0:
            continue
        # an unknown Computer Modern code gets no label: compose() then skips the expression
        label = CM_TOKENS.get((stem, num), "") if stem.startswith("cm") else UNICODE_TOKENS.get(char, char)
        boxes.append(Box(label, ox + x0, oy + y0, ox + x1, oy + y1))
        runs.append((char, "Oblique" not in stem and "Italic" not in stem, size, round(oy, 2)))
    boxes = _merge_functions(boxes, runs)
    bars = [Box("-", x, y, x + w, y + h, stretch=True) for x, y, w, h in rects]
    for root in (b for b in boxes if b.label == r"\sqrt"):
        # the radical's overbar starts where its glyph ends: one handwritten \sqrt covers both
        bar = min(bars, key=lambda r: abs(r.x0 - root.x1), default=None)
        if bar is not None and abs(bar.x0 - root.x1) < 0.5 * (root.x1 - root.x0) + 1:
            bars.remove(bar)
            root.x1, root.y1, root.stretch = bar.x1, max(root.y1, bar.y1), True
    return boxes + bars


def _merge_functions(boxes: list[Box], runs: list[tuple]) -> list[Box]:
    """Upright letter runs spelling sin, cos, tan, log or lim become one box of that function."""
    def spells(run, name):
        glyphs = [runs[k] for k, _ in run]
        return "".join(c for c, *_ in glyphs) == name and \
            all(up and s == glyphs[0][2] and y == glyphs[0][3] for _, up, s, y in glyphs)

    def fold(run, name):
        group = [b for _, b in run]
        return Box("\\" + name, group[0].x0, min(b.y0 for b in group), group[-1].x1, max(b.y1 for b in group))

    return [b for _, b in fold_names(list(enumerate(boxes)), FUNCTION_GLYPHS, spells, lambda r, n: (None, fold(r, n)))]


def compose(latex: str, bank: GlyphBank, rng: random.Random, name: str, unit: float = 10.0) -> Ink | None:
    """``latex`` handwritten with the bank's glyphs, as InkML-ready ink whose truth is the
    canonical LaTeX; None when mathtext cannot lay it out or the bank lacks one of its symbols."""
    try:
        tokens = tokenize(latex)
        truth = detokenize(tokens)
        boxes = layout(compact(tokens))  # mathtext reads no scripts from spaced tokens ("x ^ { 2 }")
    except (LatexError, ValueError, KeyError, RuntimeError):
        return None
    if not boxes:
        return None
    traces, groups = [], []
    for box in boxes:
        glyph = bank.pick(box.label, rng)
        if glyph is None:
            return None
        bw, bh = (box.x1 - box.x0) * unit, (box.y1 - box.y0) * unit
        gw, gh = max(glyph.width, 1e-6), max(glyph.height, 1e-6)
        if box.stretch:  # bars and roots take the box's shape; a bar keeps its own slight slope
            sx, sy = bw / gw, (bh / gh if box.label != "-" else bw / gw)
        elif gh < 0.35 * gw:  # a flat symbol (minus, equals, arrow, dots) is fitted to the box's width
            sx = sy = bw / gw
        else:  # any other keeps its writer's proportions, fitted into the box
            sx = sy = min(bw / gw, bh / gh)
        sx *= float(np.exp(rng.gauss(0, 0.05)))
        sy *= float(np.exp(rng.gauss(0, 0.05)))
        cx, cy = (box.x0 + box.x1) / 2 * unit, -(box.y0 + box.y1) / 2 * unit  # InkML y grows downwards
        ids = []
        for stroke in glyph.strokes:
            pts = (stroke - [gw / 2, gh / 2]) * [sx, sy] + [cx, cy]
            ids.append(str(len(traces)))
            traces.append(pts)
        groups.append(SymbolGroup(box.label, ids))
    return Ink(traces=traces, truth=truth, id=name, trace_ids=[str(i) for i in range(len(traces))], groups=groups)


def recombine(labels: list[str], rng: random.Random, replace: float = 0.3) -> str:
    """A new expression from training labels: one label with, at probability ``replace``, each
    symbol swapped for another of its class (digits, letters, Greek, operators, relations,
    functions), and sometimes one braced argument replaced by a braced argument of another label."""
    tokens = tokenize(rng.choice(labels))
    classes = {t: c for c in CLASSES for t in c}
    out = [rng.choice(classes[t]) if t in classes and rng.random() < replace else t for t in tokens]
    if rng.random() < 0.5:
        donor = tokenize(rng.choice(labels))
        theirs, mine = braced_spans(donor), braced_spans(out)
        if theirs and mine:
            (a, b), (c, d) = rng.choice(mine), rng.choice(theirs)
            out = out[:a] + donor[c:d] + out[b:]
    return detokenize(out)


def braced_spans(tokens: list[str]) -> list[tuple[int, int]]:
    """(start, end) of every braced group's contents in ``tokens``."""
    spans, stack = [], []
    for i, t in enumerate(tokens):
        if t == "{":
            stack.append(i + 1)
        elif t == "}" and stack:
            spans.append((stack.pop(), i))
    return spans
