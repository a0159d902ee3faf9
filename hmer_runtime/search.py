"""Greedy and beam search over any one-step decoder, written once for PyTorch and ONNX Runtime.

A decoder is driven through ``step(tokens, state) -> (logits, attention, state)`` where tokens is
an int64 array (B,) and state is whatever the caller keeps (a dict of named tensors); ``reorder
(state, index)`` picks state rows by hypothesis index. Nothing here knows the state names.
All beams of all images advance in one ``step`` call (B = images x beams).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

StepFn = Callable[[np.ndarray, object], tuple[np.ndarray, np.ndarray, object]]
ReorderFn = Callable[[object, np.ndarray], object]


class Constraint(Protocol):
    """Allowed next tokens per prefix (e.g. :class:`hmer_runtime.grammar.LatexGrammar`)."""

    def start(self) -> Hashable: ...
    def advance(self, state: Hashable, token_id: int) -> Hashable: ...
    def mask(self, state: Hashable, steps_left: int | None = None) -> np.ndarray: ...


@dataclass
class Hypothesis:
    """A decoded sequence (ids without sos/eos), its log-probability and per-step attention."""

    ids: list[int]
    logprob: float
    score: float
    attention: list[np.ndarray] = field(default_factory=list)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _masked(logp: np.ndarray, constraint: Constraint | None, states: list, steps_left: int) -> np.ndarray:
    """``logp`` (rows, vocab) with the tokens the constraint forbids at -inf."""
    if constraint is None:
        return logp
    allowed = np.stack([constraint.mask(s, steps_left) for s in states])
    allowed[~allowed.any(1)] = True  # a state the constraint cannot complete: let the model end it
    return np.where(allowed, logp, -np.inf)


def greedy(step: StepFn, state: object, n: int, sos: int, eos: int, max_len: int,
           keep_attention: bool = False, constraint: Constraint | None = None) -> list[Hypothesis]:
    """Arg-max decoding of ``n`` sequences; stops when all have emitted ``eos`` or at max_len.
    ``constraint`` restricts each step to the tokens it allows."""
    tokens = np.full(n, sos, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    out = [Hypothesis([], 0.0, 0.0) for _ in range(n)]
    states = [constraint.start() for _ in range(n)] if constraint else []
    for t in range(max_len):
        logits, attn, state = step(tokens, state)
        logp = _masked(log_softmax(np.asarray(logits, dtype=np.float32)), constraint, states, max_len - t)
        tokens = logp.argmax(-1).astype(np.int64)
        for i in np.flatnonzero(~done):
            out[i].logprob += float(logp[i, tokens[i]])
            if constraint:
                states[i] = constraint.advance(states[i], tokens[i])
            if tokens[i] == eos:
                done[i] = True
            else:
                out[i].ids.append(int(tokens[i]))
                if keep_attention:
                    out[i].attention.append(np.asarray(attn[i]))
        if done.all():
            break
    for h in out:
        h.score = h.logprob
    return out


def beam_search(step: StepFn, reorder: ReorderFn, state: object, n: int, beam: int, sos: int, eos: int,
                max_len: int, length_penalty: float = 1.0, keep_attention: bool = False,
                constraint: Constraint | None = None) -> list[list[Hypothesis]]:
    """Beam search for ``n`` images whose state rows are laid out image-major, ``beam`` rows each.

    Returns, per image, up to ``beam`` finished hypotheses sorted by score, where score =
    logprob / (length + 1) ** length_penalty (the +1 counts the end token). ``constraint``
    restricts each hypothesis's next token to the ones it allows.
    """
    k = beam
    tokens = np.full(n * k, sos, dtype=np.int64)
    scores = np.zeros((n, k), dtype=np.float64)
    scores[:, 1:] = -np.inf  # all beams start identical: expand only the first
    seqs: list[list[int]] = [[] for _ in range(n * k)]
    attns: list[list[np.ndarray]] = [[] for _ in range(n * k)]
    finished: list[list[Hypothesis]] = [[] for _ in range(n)]
    grammar = [constraint.start() for _ in range(n * k)] if constraint else []
    active = np.ones(n, dtype=bool)
    for t in range(max_len):
        logits, attn, state = step(tokens, state)
        logp = _masked(log_softmax(np.asarray(logits, dtype=np.float32)), constraint, grammar,
                       max_len - t).reshape(n, k, -1)
        vocab = logp.shape[-1]
        total = (scores[:, :, None] + logp).reshape(n, k * vocab)
        # 2k candidates so that k survive after removing the ones that end here.
        top = np.argsort(-total, axis=1, kind="stable")[:, : 2 * k]
        new_scores = np.full((n, k), -np.inf)
        rows = np.zeros(n * k, dtype=np.int64)
        new_tokens = np.full(n * k, eos, dtype=np.int64)
        new_seqs: list[list[int]] = [[] for _ in range(n * k)]
        new_attns: list[list[np.ndarray]] = [[] for _ in range(n * k)]
        new_grammar = list(grammar)
        for i in range(n):
            if not active[i]:
                rows[i * k:(i + 1) * k] = i * k
                continue
            slot = 0
            for c in top[i]:
                s = total[i, c]
                if not np.isfinite(s):
                    break
                b, tok = divmod(int(c), vocab)
                src = i * k + b
                if tok == eos or t == max_len - 1:
                    ids = seqs[src] if tok == eos else seqs[src] + [tok]
                    hyp_attn = attns[src] + ([np.asarray(attn[src])] if keep_attention and tok != eos else [])
                    finished[i].append(Hypothesis(list(ids), float(s),
                                                  float(s) / (len(ids) + 1) ** length_penalty, hyp_attn))
                    continue
                if slot < k:
                    dst = i * k + slot
                    new_scores[i, slot] = s
                    rows[dst] = src
                    new_tokens[dst] = tok
                    new_seqs[dst] = seqs[src] + [tok]
                    if keep_attention:
                        new_attns[dst] = attns[src] + [np.asarray(attn[src])]
                    if constraint:
                        new_grammar[dst] = constraint.advance(grammar[src], tok)
                    slot += 1
                if slot == k and len(finished[i]) >= k:
                    break
            # Stop an image when k hypotheses have ended and no live beam can beat the best of them
            # (log-probabilities only fall, so a live beam's best possible score is bounded).
            if len(finished[i]) >= k:
                best_done = max(h.score for h in finished[i])
                best_live = new_scores[i].max() / (t + 2) ** length_penalty if slot else -np.inf
                if slot == 0 or best_live <= best_done:
                    active[i] = False
                    new_scores[i] = -np.inf
            elif slot == 0:
                active[i] = False
        if not active.any():
            break
        scores, tokens, seqs, attns, grammar = new_scores, new_tokens, new_seqs, new_attns, new_grammar
        state = reorder(state, rows)
    out = []
    for i in range(n):
        hyps = sorted(finished[i], key=lambda h: -h.score)[:k]
        out.append(hyps or [Hypothesis([], -np.inf, -np.inf)])
    return out


def combine_r2l(hyps: list[list[Hypothesis]], r2l: list[float], length_penalty: float = 1.0) -> list[list[Hypothesis]]:
    """CoMER's bidirectional rescoring: each hypothesis scored by the mean of its left-to-right
    and right-to-left log-probabilities (``r2l`` flat, in the order of ``hyps``), then re-ranked."""
    out, j = [], 0
    for hs in hyps:
        rescored = []
        for h in hs:
            lp = (h.logprob + r2l[j]) / 2
            rescored.append(Hypothesis(h.ids, lp, lp / (len(h.ids) + 1) ** length_penalty, h.attention))
            j += 1
        out.append(sorted(rescored, key=lambda h: -h.score))
    return out
