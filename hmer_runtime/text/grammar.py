"""Which next tokens keep a decoded prefix valid canonical LaTeX (see :mod:`hmer_runtime.text.latex`).

In the canonical form a ``{`` only opens a mandatory argument (of ``^``, ``_``, ``\\frac``,
``\\sqrt`` and accent commands), every argument is braced, and a ``\\sqrt`` index is ``[ .. ]``.
So a decoder's output is parseable exactly when it follows a small pushdown automaton, and the
search can mask the tokens that would break it: no stray ``}``, no unclosed group at the end, no
script without its argument. Every target sequence the models are trained on is accepted. Given the
steps left, the mask also keeps room to close every open group before the search's length limit.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from hmer_runtime.text.latex import ONE_ARG
from hmer_runtime.text.vocab import Vocab

# A state is (stack, need): stack holds the open groups as (closing token, what must follow the
# close); need is the argument openers still required before anything else ("{", or "[{" for
# \sqrt's optional index). Both are tuples, so states are hashable and masks can be cached.
State = tuple[tuple[tuple[str, tuple[str, ...]], ...], tuple[str, ...]]

NEEDS = {"^": ("{",), "_": ("{",), "\\frac": ("{", "{"), "\\sqrt": ("[{",),
         **{cmd: ("{",) for cmd in ONE_ARG}}


def grammar_tables(needs: dict[str, tuple[str, ...]] = NEEDS) -> dict:
    """The grammar as data, for ``model.json`` (``grammar``): which argument openers each token
    requires next ("[{": an optional ``[`` index, then ``{``). Every runtime interprets this one
    table with the same small automaton (``LatexGrammar`` here, ``hmer.js`` in the browser)."""
    return {"needs": {tok: list(openers) for tok, openers in sorted(needs.items())}}


def needs_from_tables(tables: dict | None) -> dict[str, tuple[str, ...]]:
    """The ``needs`` table of ``grammar_tables`` output (a model exported without one: NEEDS)."""
    if not tables:
        return NEEDS
    return {str(tok): tuple(str(o) for o in openers) for tok, openers in tables["needs"].items()}


class LatexGrammar:
    """Prefix automaton over a vocabulary's token ids; ``mask(state)`` gives the allowed next ids."""

    def __init__(self, vocab: Vocab, needs: dict[str, tuple[str, ...]] = NEEDS):
        self.vocab = vocab
        self.tokens = vocab.tokens
        self.needs = needs
        self._mask = lru_cache(maxsize=4096)(self._compute_mask)
        # How much a token raises ``cost``: in a state needing an argument ("{" opens it: -1, a
        # \sqrt index "[" adds its "]": +1), and otherwise (commands add their arguments; the
        # top group's closer, -1, is set per state).
        self._need_growth = np.array([-1 if t == "{" else 1 if t == "[" else 0 for t in self.tokens])
        self._free_growth = np.array([2 * len(needs.get(t, ())) for t in self.tokens])
        self._max_growth = int(self._free_growth.max(initial=1))

    def start(self) -> State:
        return ((), ())

    def advance(self, state: State, token_id: int) -> State:
        """The state after ``token_id`` (an id the mask allowed; others leave the state as is)."""
        stack, need = state
        tok = self.tokens[int(token_id)]
        if need:
            if tok == "[" and need[0] == "[{":
                return stack + (("]", ("{",) + need[1:]),), ()
            if tok == "{":
                return stack + (("}", need[1:]),), ()
            return state
        if stack and tok == stack[-1][0]:
            return stack[:-1], stack[-1][1]
        return stack, self.needs.get(tok, ())

    def mask(self, state: State, steps_left: int | None = None) -> np.ndarray:
        """Boolean (vocab,) array: True where the token may come next. With ``steps_left`` (this
        step included), only tokens after which the sequence can still be closed and ended in time."""
        allowed = self._mask(state)
        if steps_left is None or self.cost(state) + self._max_growth + 2 <= steps_left:
            return allowed
        stack, need = state
        growth = self._need_growth if need else self._free_growth
        if stack and not need:
            growth = growth.copy()
            growth[self.vocab.index[stack[-1][0]]] = -1
        fits = self.cost(state) + growth + 1 <= steps_left - 1
        fits[self.vocab.eos_id] = True  # allowed by the grammar only once everything is closed
        return allowed & fits

    @staticmethod
    def cost(state: State) -> int:
        """The fewest tokens that complete ``state`` (each missing argument is at least ``{ }``)."""
        stack, need = state
        return 2 * len(need) + sum(1 + 2 * len(after) for _, after in stack)

    def _compute_mask(self, state: State) -> np.ndarray:
        stack, need = state
        idx = self.vocab.index
        allowed = np.zeros(len(self.tokens), dtype=bool)
        if need:
            for opener in need[0]:
                if opener in idx:
                    allowed[idx[opener]] = True
            return allowed
        allowed[:] = True
        for special in (self.vocab.pad_id, self.vocab.sos_id):
            allowed[special] = False
        if "{" in idx:
            allowed[idx["{"]] = False  # a bare group is flattened away in the canonical form
        if "}" in idx and not (stack and stack[-1][0] == "}"):
            allowed[idx["}"]] = False
        if stack:
            allowed[self.vocab.eos_id] = False
        return allowed

    def accepts(self, ids: list[int]) -> bool:
        """Whether a whole sequence (without sos/eos) is complete, valid canonical LaTeX."""
        state = self.start()
        for i in ids:
            if not self.mask(state)[i]:
                return False
            state = self.advance(state, i)
        return bool(self.mask(state)[self.vocab.eos_id])
