"""Greedy and beam search over any one-step decoder, written once for PyTorch and ONNX Runtime.

A decoder is driven through ``step(tokens, state) -> (logits, attention, state)`` where tokens is
an int64 array (B,) and state is whatever the caller keeps (a dict of named tensors); ``reorder
(state, index)`` picks state rows by hypothesis index. Nothing here knows the state names.
All beams of all images advance in one ``step`` call (B = images x beams).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol

import numpy as np

from hmer_runtime.decoding.hypothesis import Hypothesis
from hmer_runtime.decoding.rules import RULES

StepFn = Callable[[np.ndarray, object], tuple[np.ndarray, np.ndarray, object]]
ReorderFn = Callable[[object, np.ndarray], object]


class Constraint(Protocol):
    """Allowed next tokens per prefix (e.g. :class:`hmer_runtime.text.grammar.LatexGrammar`)."""

    def start(self) -> Hashable: ...
    def advance(self, state: Hashable, token_id: int) -> Hashable: ...
    def mask(self, state: Hashable, steps_left: int | None = None) -> np.ndarray: ...
    def accepts(self, ids: list[int]) -> bool: ...


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def teacher_forced_inputs(sequences: list[list[int]], start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), int64 (N, T), to score each sequence read from ``start`` to ``end``:
    inputs ``start, s...`` and targets ``s..., end``, -1 past a sequence's end (a right-to-left
    reading starts at eos and ends at sos)."""
    t = max((len(s) for s in sequences), default=0) + 1
    inputs = np.full((len(sequences), t), start, dtype=np.int64)
    targets = np.full((len(sequences), t), -1, dtype=np.int64)
    for i, s in enumerate(sequences):
        inputs[i, 1:len(s) + 1] = s
        targets[i, :len(s) + 1] = list(s) + [end]
    return inputs, targets


def masked_logprobs(logp: np.ndarray, constraint: Constraint | None, states: list, steps_left: int) -> np.ndarray:
    """``logp`` (rows, vocab) with the tokens the constraint forbids at -inf (a row whose state is
    None is free)."""
    if constraint is None:
        return logp
    free = np.ones(logp.shape[-1], dtype=bool)
    allowed = np.stack([free if s is None else constraint.mask(s, steps_left) for s in states])
    allowed[~allowed.any(1)] = True  # a state the constraint cannot complete: let the model end it
    return np.where(allowed, logp, -np.inf)


def greedy(step: StepFn, state: object, n: int, sos: int, eos: int, max_len: int, *,
           keep_attention: bool = False, constraint: Constraint | None = None,
           reorder: ReorderFn | None = None) -> list[Hypothesis]:
    """Arg-max decoding of ``n`` sequences; stops when all have emitted ``eos`` or at max_len.
    ``constraint`` restricts each step to the tokens it allows. With ``reorder``, a sequence that
    has ended leaves the batch, so the steps after it run on fewer rows."""
    out = [Hypothesis([], 0.0, 0.0) for _ in range(n)]
    live = np.arange(n)  # the sequence each state row decodes
    done = np.zeros(n, dtype=bool)
    tokens = np.full(n, sos, dtype=np.int64)
    states = [constraint.start() for _ in range(n)] if constraint else []
    for t in range(max_len):
        logits, attn, state = step(tokens, state)
        logp = masked_logprobs(log_softmax(np.asarray(logits, dtype=np.float32)), constraint, states, max_len - t)
        tokens = logp.argmax(-1).astype(np.int64)
        for r, i in enumerate(live):
            if done[i]:
                continue
            out[i].logprob += float(logp[r, tokens[r]])
            if constraint:
                states[r] = constraint.advance(states[r], tokens[r])
            if tokens[r] == eos:
                done[i] = True
            else:
                out[i].ids.append(int(tokens[r]))
                out[i].token_logprobs.append(float(logp[r, tokens[r]]))
                if keep_attention:
                    out[i].attention.append(np.asarray(attn[r]))
        if done.all():
            break
        rows = np.flatnonzero(~done[live])
        if reorder is not None and len(rows) < len(live):
            live, tokens, state = live[rows], tokens[rows], reorder(state, rows)
            states = [states[r] for r in rows] if constraint else []
    for h in out:
        h.score = h.logprob
    return out


def beam_search(step: StepFn, reorder: ReorderFn, state: object, n: int, beam: int, sos, eos,
                max_len: int, *, length_penalty: float = 1.0, keep_attention: bool = False,
                constraint: Constraint | None = None, constrained: np.ndarray | None = None,
                rule: str = "hmer") -> list[list[Hypothesis]]:
    """Beam search for ``n`` images whose state rows are laid out image-major, ``beam`` rows each.

    Returns, per image, up to ``beam`` finished hypotheses sorted by score, where score =
    logprob / (length + 1) ** length_penalty (the +1 counts the end token). ``constraint``
    restricts each hypothesis's next token to the ones it allows, for the images ``constrained``
    (one bool per image) marks, or all. ``sos``/``eos`` may be one token per image (a
    right-to-left reading starts at eos and ends at sos).

    ``reorder(state, rows)`` gets one source row per next row; an image that is done leaves the
    batch, so ``rows`` may be shorter than the batch it indexes, and the caller's per-row memory
    must follow it.

    ``rule`` names how endings are treated (``hmer_runtime.decoding.rules``: ``hmer`` or CoMER's
    ``comer``); the expansion of the live beams is the same for every rule.
    """
    if rule not in RULES:
        raise ValueError(f"rule {rule!r} is not supported (choose from {', '.join(RULES)})")
    k = beam
    endings = RULES[rule](n, k, length_penalty, max_len)
    starts = np.broadcast_to(np.asarray(sos, dtype=np.int64), (n,))
    ends = np.broadcast_to(np.asarray(eos, dtype=np.int64), (n,))
    live = np.arange(n)  # the images in the batch, k rows each; an image leaves when it is done
    tokens = np.repeat(starts, k)
    scores = np.zeros((n, k), dtype=np.float64)
    scores[:, 1:] = -np.inf  # all beams start identical: expand only the first
    seqs: list[list[int]] = [[] for _ in range(n * k)]
    lps: list[list[float]] = [[] for _ in range(n * k)]  # each id's log-probability
    attns: list[list[np.ndarray]] = [[] for _ in range(n * k)]
    bound = np.ones(n, dtype=bool) if constrained is None else np.asarray(constrained, dtype=bool)
    grammar = [constraint.start() if bound[i // k] else None for i in range(n * k)] if constraint else []
    for t in range(endings.steps):
        logits, attn, state = step(tokens, state)
        m = len(live)
        logp = masked_logprobs(log_softmax(np.asarray(logits, dtype=np.float32)), constraint, grammar,
                               endings.steps - t).reshape(m, k, -1)
        vocab = logp.shape[-1]
        total = (scores[:, :, None] + logp).reshape(m, k * vocab)
        # 2k candidates so that k survive after removing the ones that end here.
        top = np.argsort(-total, axis=1, kind="stable")[:, : 2 * k]
        new_scores = np.full((m, k), -np.inf)
        rows = np.zeros(m * k, dtype=np.int64)
        new_tokens = np.repeat(ends[live], k)
        new_seqs: list[list[int]] = [[] for _ in range(m * k)]
        new_lps: list[list[float]] = [[] for _ in range(m * k)]
        new_attns: list[list[np.ndarray]] = [[] for _ in range(m * k)]
        new_grammar = list(grammar)
        going = np.ones(m, dtype=bool)
        forced = endings.forced(t)  # the length limit: every beam ends here
        for j, i in enumerate(live):
            slot = 0
            for rank, c in enumerate(top[j]):
                s = total[j, c]
                if not np.isfinite(s):
                    break
                b, tok = divmod(int(c), vocab)
                src = j * k + b
                ended = tok == ends[i]
                if ended or forced:
                    if not endings.counts(rank, not ended):
                        continue
                    ids = seqs[src] if ended else seqs[src] + [tok]
                    hyp_attn = attns[src] + ([np.asarray(attn[src])] if keep_attention and not ended else [])
                    hyp_lps = lps[src] if ended else lps[src] + [float(logp[j, b, tok])]
                    endings.add(i, Hypothesis(list(ids), float(s), float(s) / (len(ids) + 1) ** length_penalty,
                                              hyp_attn, list(hyp_lps)))
                    continue
                if slot < k:
                    dst = j * k + slot
                    new_scores[j, slot] = s
                    rows[dst] = src
                    new_tokens[dst] = tok
                    new_seqs[dst] = seqs[src] + [tok]
                    new_lps[dst] = lps[src] + [float(logp[j, b, tok])]
                    if keep_attention:
                        new_attns[dst] = attns[src] + [np.asarray(attn[src])]
                    if constraint:
                        g = grammar[src]
                        new_grammar[dst] = None if g is None else constraint.advance(g, tok)
                    slot += 1
                if slot == k and endings.enough(i):
                    break
            going[j] = endings.going(i, new_scores[j], slot, t)
        if not going.any():
            break
        keep = (np.flatnonzero(going)[:, None] * k + np.arange(k)).ravel()  # the rows that go on
        live, scores, tokens, rows = live[going], new_scores[going], new_tokens[keep], rows[keep]
        seqs, attns = [new_seqs[r] for r in keep], [new_attns[r] for r in keep]
        lps = [new_lps[r] for r in keep]
        grammar = [new_grammar[r] for r in keep] if constraint else []
        state = reorder(state, rows)
    else:
        for j, i in enumerate(live):  # out of steps: the rule decides what the live beams become
            endings.out_of_length(i, [
                Hypothesis(list(seqs[j * k + b]), float(scores[j, b]),
                           float(scores[j, b]) / (len(seqs[j * k + b]) + 1) ** length_penalty, attns[j * k + b],
                           list(lps[j * k + b])) for b in range(k)])
    out = []
    for i in range(n):
        hyps = sorted(endings.results(i), key=lambda h: -h.score)[:k]
        out.append(hyps or [Hypothesis([], -np.inf, -np.inf)])
    return out


def bidirectional_search(step: StepFn, reorder: ReorderFn, state: object, n: int, beam: int, sos: int, eos: int,
                         max_len: int, length_penalty: float,
                         rate: Callable[[list[int], list[list[int]], int, int], list[float]],
                         constraint: Constraint | None = None) -> list[list[Hypothesis]]:
    """CoMER's search: ``beam`` beams reading left to right and ``beam`` reading right to left
    (state rows for 2n images: the n images, then the same n again), every ending of each
    rescored by the opposite reading, and ranked by the sum of the two length-normalised
    log-probabilities. ``rate(images, sequences, start, end)`` gives log P(sequence + end | image,
    start) by teacher forcing, one per sequence. Returns all 2 x beam candidates per image, in
    left-to-right order, best first (on a tie, left-to-right endings first, as in CoMER).

    With ``constraint``, the left-to-right beams are held to it as in ``beam_search`` (it reads
    prefixes, so not the right-to-left ones), and only the candidates it accepts are returned
    (all of them where it accepts none)."""
    hyps = beam_search(step, reorder, state, 2 * n, beam, [sos] * n + [eos] * n, [eos] * n + [sos] * n,
                       max_len, length_penalty=length_penalty, rule="comer", constraint=constraint,
                       constrained=np.arange(2 * n) < n)
    forward = [(i, h) for i in range(n) for h in hyps[i]]
    backward = [(i, h) for i in range(n) for h in hyps[n + i]]
    # a left-to-right ending is rated right to left (its ids reversed), and the other way round
    rev_f = rate([i for i, _ in forward], [h.ids[::-1] for _, h in forward], eos, sos)
    rev_b = rate([i for i, _ in backward], [h.ids[::-1] for _, h in backward], sos, eos)
    cands: list[list[Hypothesis]] = [[] for _ in range(n)]
    for pairs, rev, flip in ((forward, rev_f, False), (backward, rev_b, True)):
        for (i, h), r in zip(pairs, rev):
            ids = h.ids[::-1] if flip else h.ids
            l2r, r2l = (r, h.logprob) if flip else (h.logprob, r)
            token_lps = h.token_logprobs[::-1] if flip else h.token_logprobs
            cands[i].append(Hypothesis(list(ids), h.logprob, h.score + r / (len(ids) + 1) ** length_penalty,
                                       token_logprobs=list(token_lps), l2r=l2r, r2l=r2l))
    if constraint is not None:
        cands = [[h for h in c if constraint.accepts(h.ids)] or c for c in cands]
    return [sorted(c, key=lambda h: -h.score) for c in cands]


def rescored_score(h: Hypothesis, r2l: float, length_penalty: float = 1.0) -> float:
    """``h``'s score once rescored with right-to-left log-probability ``r2l``: the mean of its two
    readings, length-normalised. With ``r2l`` 0 it is the highest rescoring can give ``h``, since
    a right-to-left log-probability is at most 0."""
    return (h.logprob + r2l) / 2 / (len(h.ids) + 1) ** length_penalty


def contenders(hs: list[Hypothesis], r2l: list[float | None], keep: int, length_penalty: float = 1.0) -> list[int]:
    """Which of one image's hypotheses past the first ``keep`` rescoring could still lift into its
    top ``keep``, once the first ``keep`` are read right to left (``r2l``, in the order of ``hs``):
    those whose highest possible rescored score reaches the lowest rescored score among them. The
    others cannot, so leaving them unread keeps the top ``keep`` exactly as reading them all would."""
    if len(hs) <= keep:
        return []
    floor = min(rescored_score(hs[j], r2l[j], length_penalty) for j in range(keep))
    return [j for j in range(keep, len(hs)) if rescored_score(hs[j], 0.0, length_penalty) >= floor]


def combine_r2l(hyps: list[list[Hypothesis]], r2l: list[list[float | None]],
                length_penalty: float = 1.0) -> list[list[Hypothesis]]:
    """CoMER's bidirectional rescoring: each hypothesis scored by the mean of its left-to-right
    and right-to-left log-probabilities (``r2l``: per image, in the order of ``hyps``), then
    re-ranked. A hypothesis left unread (None, see :func:`contenders`) keeps ``r2l`` None and its
    left-to-right log-probability, as if both readings agreed: that is below the highest score
    rescoring could give it, so it still ranks below the hypotheses it could not overtake."""
    out = []
    for hs, rs in zip(hyps, r2l):
        rescored = []
        for h, r in zip(hs, rs):
            lp = h.logprob if r is None else (h.logprob + r) / 2
            rescored.append(Hypothesis(h.ids, lp, lp / (len(h.ids) + 1) ** length_penalty, h.attention,
                                       h.token_logprobs, l2r=h.logprob, r2l=r))
        out.append(sorted(rescored, key=lambda h: -h.score))
    return out
