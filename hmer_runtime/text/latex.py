"""Canonical LaTeX tokens: ``tokenize(latex) -> list[str]`` and ``detokenize(tokens) -> str``.

Two spellings that render the same should give the same token sequence, so models are not
asked to guess a writer's typing habits. The canonical form:

* synonyms folded (``\\lt`` -> ``<``, ``\\ge`` -> ``\\geq``, ``\\to`` -> ``\\rightarrow``, ...);
* spacing (``\\,``, ``\\quad``, ``~``), sizing (``\\left``, ``\\Big``) and style commands dropped;
* ``\\mbox{..}``, ``\\mathrm{..}``, ``\\text{..}`` unwrapped, their content kept as symbols
  (function names such as ``sin`` become ``\\sin``);
* script, ``\\frac`` and ``\\sqrt`` arguments always braced (``x^2`` == ``x^{2}``), a subscript
  written before a superscript (``x^2_i`` == ``x_i^2``), and plain ``{...}`` groups flattened;
* ``detokenize`` joins tokens with spaces, which is valid LaTeX, and
  ``tokenize(detokenize(t)) == t`` for every canonical ``t``.
"""

from __future__ import annotations

import re

_LEX = re.compile(r"\\[a-zA-Z]+|\\.|\S", re.DOTALL)

SYNONYMS = {
    "\\lt": "<", "\\gt": ">", "\\le": "\\leq", "\\ge": "\\geq", "\\leqslant": "\\leq",
    "\\geqslant": "\\geq", "\\ne": "\\neq", "\\to": "\\rightarrow", "\\gets": "\\leftarrow",
    "\\lbrace": "\\{", "\\rbrace": "\\}", "\\lbrack": "[", "\\rbrack": "]", "\\vert": "|",
    "\\mid": "|", "\\dots": "\\ldots", "\\dotsc": "\\ldots", "\\prime": "'", "\\dfrac": "\\frac",
    "\\tfrac": "\\frac", "\\cdotp": "\\cdot", "\\Vert": "\\parallel", "\\|": "\\parallel",
    "\\ast": "*", "\\colon": ":", "\\lvert": "|", "\\rvert": "|", "\\backslash": "\\backslash",
}
DROPPED = {
    "\\,", "\\;", "\\:", "\\!", "\\ ", "\\quad", "\\qquad", "~", "\\left", "\\right", "\\big",
    "\\Big", "\\bigg", "\\Bigg", "\\bigl", "\\bigr", "\\Bigl", "\\Bigr", "\\biggl", "\\biggr",
    "\\Biggl", "\\Biggr", "\\limits", "\\nolimits", "\\displaystyle", "\\textstyle",
    "\\scriptstyle", "\\vtop", "\\hbox", "\\hfill", "&", "$",
}
TEXT_WRAPPERS = {"\\mbox", "\\mathrm", "\\text", "\\textrm", "\\mathit", "\\operatorname",
                 "\\mathnormal", "\\textit", "\\rm", "\\it"}
FUNCTIONS = {"sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "lim", "exp", "max", "min",
             "sinh", "cosh", "tanh", "arcsin", "arccos", "arctan", "det", "lg"}
ONE_ARG = {"\\overline", "\\underline", "\\hat", "\\bar", "\\vec", "\\dot", "\\ddot", "\\tilde",
           "\\widehat", "\\widetilde", "\\overrightarrow"}


class LatexError(ValueError):
    """LaTeX that cannot be tokenized (unbalanced braces, a command missing its argument)."""


def _lex(latex: str) -> list[str]:
    out = []
    for tok in _LEX.findall(latex):
        # CROHME has ``\ltq``-style typos for ``\lt q``: split known relations glued to letters.
        m = re.fullmatch(r"\\(lt|gt|leq|geq|neq)([a-zA-Z]+)", tok)
        if m and "\\" + m.group(1) + m.group(2) not in SYNONYMS:
            out.append("\\" + m.group(1))
            out.extend(m.group(2))
        else:
            out.append(tok)
    return out


class _Parser:
    def __init__(self, tokens: list[str], source: str):
        self.toks = tokens
        self.i = 0
        self.source = source

    def peek(self) -> str | None:
        while self.i < len(self.toks) and self.toks[self.i] in DROPPED:
            if self.toks[self.i] in ("\\left", "\\right") and self.i + 1 < len(self.toks) \
                    and self.toks[self.i + 1] == ".":
                self.i += 1  # ``\left.`` draws nothing
            self.i += 1
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise LatexError(f"unexpected end of {self.source!r}")
        self.i += 1
        return tok

    def sequence(self, stop: str | None = None) -> list[str]:
        """Tokens up to (not including) ``stop``; with stop=None, to the end."""
        out: list[str] = []
        while True:
            tok = self.peek()
            if tok is None:
                if stop is not None:
                    raise LatexError(f"missing {stop!r} in {self.source!r}")
                return out
            if tok == stop:
                return out
            if tok == "}":
                if stop is None:  # a stray closing brace at top level (a typo in CROHME 2014)
                    self.take()
                    continue
                raise LatexError(f"unbalanced {tok!r} in {self.source!r}")
            if tok in ("^", "_"):
                out.extend(self.scripts())
            else:
                out.extend(self.atom())

    def scripts(self) -> list[str]:
        """A run of ``^``/``_`` scripts, emitted subscript first."""
        subs: list[list[str]] = []
        sups: list[list[str]] = []
        while self.peek() in ("^", "_"):
            op = self.take()
            arg = self.argument()
            (subs if op == "_" else sups).append(arg)
        out: list[str] = []
        for a in subs:
            out += ["_", "{", *a, "}"]
        for a in sups:
            out += ["^", "{", *a, "}"]
        return out

    def argument(self) -> list[str]:
        """A command or script argument: a braced group's content, or one atom."""
        if self.peek() == "{":
            self.take()
            content = self.sequence("}")
            self.take()
            return content
        return self.atom()

    def atom(self) -> list[str]:
        tok = self.take()
        tok = SYNONYMS.get(tok, tok)
        if tok == "{":
            content = self.sequence("}")
            self.take()
            return content
        if tok == "\\frac":
            num = self.argument()
            den = self.argument()
            return ["\\frac", "{", *num, "}", "{", *den, "}"]
        if tok == "\\sqrt":
            out = ["\\sqrt"]
            if self.peek() == "[":
                self.take()
                index = self.sequence("]")
                self.take()
                out += ["[", *index, "]"]
            return out + ["{", *self.argument(), "}"]
        if tok in TEXT_WRAPPERS:
            if self.peek() != "{":
                return []  # ``{\rm x}`` style switch: the content follows as plain tokens
            return _fold_functions(self.argument())
        if tok in ONE_ARG:
            return [tok, "{", *self.argument(), "}"]
        return [tok]


def fold_names(items: list, names, spells, fold) -> list:
    """``items`` with every run that ``spells(run, name)`` one of ``names`` (longest first)
    replaced by ``fold(run, name)``: letters that spell a function name become one symbol."""
    out: list = []
    i = 0
    while i < len(items):
        for name in sorted(names, key=len, reverse=True):
            run = items[i:i + len(name)]
            if len(run) == len(name) and spells(run, name):
                out.append(fold(run, name))
                i += len(name)
                break
        else:
            out.append(items[i])
            i += 1
    return out


def _fold_functions(tokens: list[str]) -> list[str]:
    """Inside text wrappers, spelled-out function names become their commands (sin -> \\sin)."""
    return fold_names(tokens, FUNCTIONS, lambda run, name: "".join(run) == name and all(len(t) == 1 for t in run),
                      lambda run, name: "\\" + name)


def tokenize(latex: str) -> list[str]:
    """Canonical token list of a LaTeX string (``$`` delimiters allowed). Raises LatexError."""
    latex = latex.strip()
    if latex.startswith("$") and latex.endswith("$"):
        latex = latex.strip("$")
    parser = _Parser(_lex(latex), latex)
    tokens = parser.sequence()
    return tokens


def detokenize(tokens: list[str]) -> str:
    """LaTeX for a token list: tokens joined by spaces (valid LaTeX, round-trips through tokenize)."""
    return " ".join(tokens)


def compact(tokens: list[str]) -> str:
    """LaTeX for a token list with no more spaces than it needs (``x^{2}+2x+1``): a space only
    where a command name would otherwise run into the letter after it. Round-trips through
    tokenize, and is the form typesetters such as matplotlib's mathtext read scripts from."""
    out: list[str] = []
    for tok in tokens:
        if out and out[-1][:1] == "\\" and out[-1][-1:].isalpha() and tok[:1].isalpha():
            out.append(" ")
        out.append(tok)
    return "".join(out)
