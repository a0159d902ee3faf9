"""New expression structures for synthetic handwriting (``hmer-data synth --structures``).

Recombining training labels (:func:`hmer_train.synth.recombine`) keeps their shapes: a fraction
stays a fraction of the same depth. Users write shapes the labels hold rarely or never (nested
fractions and scripts, long sums and integrals with limits, functions of fractions, roots of
roots, long polynomials), so :func:`structured` builds them from a small grammar of templates
whose slots are filled with atoms, short braced sub-expressions of the training labels, or other
templates, to a bounded depth. Every token it writes is in CROHME's vocabulary (which has no
matrices, so none are written).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from hmer_runtime.text.latex import LatexError, tokenize
from hmer_train.synth import braced_spans

LETTERS = list("abcdefghijkmnpqrstuvwxyz") + list("ABCEFGHILMNPRSTVXY")
COMMON = list("xyznabcktf")  # the letters CROHME's labels use most, drawn more often
GREEK = [r"\alpha", r"\beta", r"\gamma", r"\theta", r"\lambda", r"\mu", r"\phi", r"\pi", r"\sigma"]
FUNCTIONS = [r"\sin", r"\cos", r"\tan", r"\log"]
OPERATORS = ["+", "-", "+", "-", r"\times", r"\cdot", r"\pm", r"\div"]
RELATIONS = ["=", "=", "=", r"\leq", r"\geq", "<", ">", r"\neq"]
INDICES = list("ijkn")

Slot = Callable[[random.Random, int], str]


def _number(rng: random.Random) -> str:
    digits = rng.choice([1, 1, 1, 2, 2, 3])
    return " ".join(str(rng.randrange(1 if i == 0 and digits > 1 else 0, 10)) for i in range(digits))


def _variable(rng: random.Random) -> str:
    r = rng.random()
    return rng.choice(COMMON) if r < 0.6 else rng.choice(LETTERS) if r < 0.9 else rng.choice(GREEK)


def _atom(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.45:
        return _variable(rng)
    if r < 0.75:
        return _number(rng)
    if r < 0.9:
        return f"{_variable(rng)} ^ {{ {_number(rng) if rng.random() < 0.7 else _variable(rng)} }}"
    return f"{_variable(rng)} _ {{ {rng.choice(INDICES + ['0', '1', '2'])} }}"


class StructureGrammar:
    """Templates over slots; ``fragments`` are short sub-expressions taken from training labels."""

    def __init__(self, fragments: list[str], max_depth: int = 3):
        self.fragments, self.max_depth = fragments, max_depth
        self.templates: list[tuple[float, Callable[[random.Random, int], str]]] = [
            (3, self._fraction), (2, self._nested_fraction), (2, self._scripts), (2, self._sum),
            (2, self._integral), (1, self._limit), (2, self._function), (1.5, self._root),
            (1.5, self._polynomial), (2, self._chain), (1, self._brackets), (1, self._derivative),
            (1, self._exponential), (1, self._set),
        ]

    def term(self, rng: random.Random, depth: int) -> str:
        """A slot's content: a template below the depth limit, else a fragment or an atom."""
        r = rng.random()
        if depth < self.max_depth and r < 0.35:
            return self.template(rng, depth + 1)
        if self.fragments and r < 0.6:
            return rng.choice(self.fragments)
        return _atom(rng)

    def template(self, rng: random.Random, depth: int = 0) -> str:
        weights = [w for w, _ in self.templates]
        return rng.choices([t for _, t in self.templates], weights)[0](rng, depth)

    def _sum_of(self, rng: random.Random, depth: int, lo: int, hi: int) -> str:
        n = rng.randint(lo, hi)
        return f" {rng.choice(OPERATORS)} ".join(self.term(rng, depth) for _ in range(n))

    def _fraction(self, rng, d):
        return rf"\frac {{ {self._sum_of(rng, d, 1, 2)} }} {{ {self._sum_of(rng, d, 1, 2)} }}"

    def _nested_fraction(self, rng, d):
        inner = rf"\frac {{ {self.term(rng, d)} }} {{ {self.term(rng, d)} }}"
        outer = self.term(rng, d)
        r = rng.random()
        if r < 0.35:
            return rf"\frac {{ {outer} }} {{ {inner} }}"
        if r < 0.7:
            return rf"\frac {{ {inner} }} {{ {outer} }}"
        return rf"\frac {{ {outer} }} {{ {_atom(rng)} {rng.choice(['+', '-'])} {inner} }}"

    def _scripts(self, rng, d):
        base, a, b = _variable(rng), _atom(rng), rng.choice(INDICES + ["2", "n", "0"])
        r = rng.random()
        if r < 0.3:
            return f"{base} ^ {{ {_variable(rng)} ^ {{ {_atom(rng)} }} }}"
        if r < 0.55:
            return f"{base} _ {{ {_variable(rng)} _ {{ {b} }} }}"
        if r < 0.8:
            return f"{base} _ {{ {b} }} ^ {{ {a} }}"
        return f"{base} ^ {{ {self.term(rng, d)} }}"

    def _limits(self, rng):
        i = rng.choice(INDICES)
        top = rng.choice(["n", "N", "m", r"\infty", _number(rng)])
        return f"_ {{ {i} = {rng.choice(['0', '1', '1', '2'])} }} ^ {{ {top} }}", i

    def _sum(self, rng, d):
        limits, i = self._limits(rng)
        body = rng.choice([f"{_variable(rng)} _ {{ {i} }}", f"{_variable(rng)} ^ {{ {i} }}",
                           rf"\frac {{ 1 }} {{ {i} ^ {{ 2 }} }}", self.term(rng, d)])
        tail = f" {rng.choice(RELATIONS)} {self.term(rng, d)}" if rng.random() < 0.4 else ""
        return rf"\sum {limits} {body}{tail}"

    def _integral(self, rng, d):
        v = rng.choice(list("xtuy") + [r"\theta"])
        lo, hi = rng.choice(["0", "1", "a", "- 1"]), rng.choice(["1", "b", "x", r"\infty", "2"])
        limits = "" if rng.random() < 0.3 else f"_ {{ {lo} }} ^ {{ {hi} }}"
        double = r"\int " if rng.random() < 0.1 else ""
        tail = f" {rng.choice(RELATIONS)} {self.term(rng, d)}" if rng.random() < 0.3 else ""
        return rf"{double}\int {limits} {self.term(rng, d)} d {v}{tail}"

    def _limit(self, rng, d):
        v = rng.choice(list("xnht"))
        to = rng.choice(["0", r"\infty", "1", "a", "- " + r"\infty"])
        return rf"\lim _ {{ {v} \rightarrow {to} }} {self.term(rng, d)}"

    def _function(self, rng, d):
        f, r = rng.choice(FUNCTIONS), rng.random()
        if r < 0.3:
            return f"{f} ( {self._sum_of(rng, d, 1, 2)} )"
        if r < 0.5:
            x, op, g, y = _variable(rng), rng.choice(OPERATORS), rng.choice(FUNCTIONS), _variable(rng)
            return f"{f} ^ {{ 2 }} {x} {op} {g} ^ {{ 2 }} {y}"
        if r < 0.7:
            return rf"\log _ {{ {rng.choice(['2', '1 0', 'a', 'e', 'b'])} }} {self.term(rng, d)}"
        if r < 0.85:
            return rf"{f} {self._fraction(rng, d)}"
        return f"{rng.choice('fgh')} ( {_variable(rng)} ) = {self._sum_of(rng, d, 1, 3)}"

    def _root(self, rng, d):
        r = rng.random()
        if r < 0.4:
            return rf"\sqrt {{ {self._sum_of(rng, d, 1, 3)} }}"
        if r < 0.7:
            return rf"\sqrt [ {rng.choice(['3', '3', 'n', '4'])} ] {{ {self.term(rng, d)} }}"
        return rf"\sqrt {{ {self.term(rng, d)} {rng.choice(OPERATORS)} \sqrt {{ {self.term(rng, d)} }} }}"

    def _polynomial(self, rng, d):
        x, n = _variable(rng), rng.randint(2, 5)
        parts = []
        for p in range(n, -1, -1):
            coef = rng.choice(["", _number(rng), _variable(rng)]) if p else _number(rng)
            mono = "" if p == 0 else x if p == 1 else f"{x} ^ {{ {p} }}"
            parts.append(f"{coef} {mono}".strip() or "1")
        return f" {rng.choice(['+', '-'])} ".join(parts)

    def _chain(self, rng, d):
        n = rng.randint(2, 3)
        rel = rng.choice(RELATIONS)
        return f" {rel} ".join(self._sum_of(rng, d, 1, 3) for _ in range(n))

    def _brackets(self, rng, d):
        o, c = rng.choice([("(", ")"), ("(", ")"), ("[", "]"), ("|", "|"), (r"\{", r"\}")])
        return f"{o} {self._sum_of(rng, d, 1, 3)} {c} {rng.choice(['', '^ { 2 }', '^ { n }', _variable(rng)])}"

    def _derivative(self, rng, d):
        y, x = rng.choice(list("yfu")), rng.choice(list("xt"))
        if rng.random() < 0.5:
            return rf"\frac {{ d {y} }} {{ d {x} }} = {self.term(rng, d)}"
        return rf"\frac {{ d }} {{ d {x} }} ( {self.term(rng, d)} )"

    def _exponential(self, rng, d):
        return rf"e ^ {{ {rng.choice(['-', ''])} {self.term(rng, d)} }}"

    def _set(self, rng, d):
        items = " , ".join(_atom(rng) for _ in range(rng.randint(2, 4)))
        if rng.random() < 0.5:
            return rf"\{{ {items} \}}"
        return rf"{_variable(rng)} \in \{{ {items} , \ldots \}}"


def label_fragments(labels: list[str], max_tokens: int = 7) -> list[str]:
    """Braced sub-expressions of ``labels`` of 2 to ``max_tokens`` tokens, deduplicated, in order."""
    seen: dict[str, None] = {}
    for label in labels:
        try:
            tokens = tokenize(label)
        except (LatexError, RecursionError):
            continue
        for a, b in braced_spans(tokens):
            if 2 <= b - a <= max_tokens:
                seen.setdefault(" ".join(tokens[a:b]))
    return list(seen)


def structured(grammar: StructureGrammar, rng: random.Random, max_tokens: int = 50) -> str:
    """One new expression of at most ``max_tokens`` tokens (tries a few draws, then an atom)."""
    for _ in range(10):
        latex = grammar.template(rng)
        try:
            if len(tokenize(latex)) <= max_tokens:
                return latex
        except LatexError:
            continue
    return _atom(rng)
