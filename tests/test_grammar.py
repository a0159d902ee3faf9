import numpy as np
import pytest

from hmer_runtime.decoding.search import beam_search, bidirectional_search, greedy
from hmer_runtime.text.grammar import LatexGrammar
from hmer_runtime.text.latex import tokenize
from hmer_runtime.text.vocab import Vocab

CANONICAL = [
    "x^2 + 2x + 1",
    "\\frac{\\sqrt[3]{x_i^2}}{y} = [0, 1]",
    "\\sqrt[n]{[a]} + \\sqrt{\\frac{1}{2}}",
    "\\lim_{n \\to \\infty} \\sum_{k=1}^{n} \\frac{1}{k^{2}}",
    "\\overline{z} \\hat{x} \\{ a \\} ^ {}",
    "]x[",
    "x^{y^{z_{1}}}",
]
VOCAB = Vocab(sorted({t for s in CANONICAL for t in tokenize(s)}))
GRAMMAR = LatexGrammar(VOCAB)


@pytest.mark.parametrize("latex", CANONICAL)
def test_every_canonical_sequence_is_accepted_token_by_token(latex):
    assert GRAMMAR.accepts(VOCAB.encode(tokenize(latex)))


@pytest.mark.parametrize("tokens", [
    ["}"], ["x", "}"], ["{", "x", "}"], ["x", "^", "2"], ["x", "^", "{", "2"], ["\\frac", "{", "x", "}"],
    ["\\frac", "{", "x", "}", "y"], ["\\sqrt", "x"], ["\\sqrt", "[", "3", "]", "x"], ["x", "_"],
    ["\\sqrt", "[", "3", "}"], ["<sos>", "x"],
])
def test_sequences_that_are_not_canonical_latex_are_rejected(tokens):
    assert not GRAMMAR.accepts(VOCAB.encode(tokens))


def test_mask_allows_exactly_the_continuations_of_a_prefix():
    state = GRAMMAR.start()
    for tok in ["\\sqrt", "[", "3", "]"]:
        state = GRAMMAR.advance(state, VOCAB.index[tok])
    assert [VOCAB.tokens[i] for i in np.flatnonzero(GRAMMAR.mask(state))] == ["{"]
    state = GRAMMAR.advance(state, VOCAB.index["{"])
    mask = GRAMMAR.mask(state)
    assert mask[VOCAB.index["}"]] and mask[VOCAB.index["]"]] and not mask[VOCAB.eos_id]


def _scripted_decoder(preferred: list[str]):
    """A decoder state-free except for the step count; it strongly prefers ``preferred[t]`` at step
    t (then eos) and mildly prefers every other token in a fixed order."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=len(VOCAB)).astype(np.float32)
    ids = VOCAB.encode(preferred) + [VOCAB.eos_id]

    def step(tokens, t):
        logits = np.tile(base, (len(tokens), 1))
        logits[:, ids[min(t, len(ids) - 1)]] += 10.0
        return logits, np.zeros((len(tokens), 1, 1)), t + 1

    return step


@pytest.mark.parametrize("preferred", [["x", "^", "2"], ["x", "}", "+", "1"], ["\\frac", "{", "1", "}"]])
def test_constrained_search_returns_only_valid_latex(preferred):
    step = _scripted_decoder(preferred)
    sos, eos = VOCAB.sos_id, VOCAB.eos_id
    free = greedy(step, 0, 1, sos, eos, 30)[0]
    assert free.ids == VOCAB.encode(preferred) and not GRAMMAR.accepts(free.ids)
    for hyp in (greedy(step, 0, 1, sos, eos, 30, constraint=GRAMMAR)[0],
                beam_search(step, lambda st, rows: st, 0, 1, 3, sos, eos, 30, constraint=GRAMMAR)[0][0]):
        assert GRAMMAR.accepts(hyp.ids)
        assert VOCAB.decode(hyp.ids)[:1] == preferred[:1]  # the valid part of the preference survives


@pytest.mark.parametrize("preferred", [["x", "^", "2"], ["x", "}", "+", "1"], ["\\frac", "{", "1", "}"]])
def test_comer_search_with_the_grammar_returns_only_valid_latex(preferred):
    """CoMER's search: the grammar holds the left-to-right beams and filters every ending, so the
    right-to-left readings (the preference reversed) never come back invalid."""
    step = _scripted_decoder(preferred)
    sos, eos = VOCAB.sos_id, VOCAB.eos_id

    def rate(images, sequences, start, end):  # the other reading's opinion: shorter is likelier
        return [-float(len(s)) for s in sequences]

    def search(constraint):
        return bidirectional_search(step, lambda st, rows: st, 0, 1, 3, sos, eos, 30, 1.0, rate, constraint)[0]

    assert not all(GRAMMAR.accepts(h.ids) for h in search(None))
    hyps = search(GRAMMAR)
    assert hyps and all(GRAMMAR.accepts(h.ids) for h in hyps)
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


def test_constraint_changes_nothing_when_the_model_already_writes_valid_latex():
    preferred = tokenize("\\frac{x^2}{y}")
    step = _scripted_decoder(preferred)
    for constraint in (None, GRAMMAR):
        hyp = beam_search(step, lambda st, rows: st, 0, 1, 3, VOCAB.sos_id, VOCAB.eos_id, 30,
                          constraint=constraint)[0][0]
        assert VOCAB.decode(hyp.ids) == preferred


@pytest.mark.parametrize("max_len", [4, 7, 12])
def test_constrained_search_closes_every_group_within_the_length_limit(max_len):
    step = _scripted_decoder(["\\frac", "{", "\\sqrt", "[", "x", "^", "{", "\\frac", "{"] * 3)
    sos, eos = VOCAB.sos_id, VOCAB.eos_id
    def rate(images, sequences, start, end):
        return [0.0] * len(sequences)

    comer = bidirectional_search(step, lambda st, rows: st, 0, 1, 3, sos, eos, max_len, 1.0, rate, GRAMMAR)[0]
    assert all(GRAMMAR.accepts(h.ids) for h in comer)
    for hyp in (greedy(step, 0, 1, sos, eos, max_len, constraint=GRAMMAR)[0],
                beam_search(step, lambda st, rows: st, 0, 1, 3, sos, eos, max_len, constraint=GRAMMAR)[0][0],
                comer[0]):
        assert GRAMMAR.accepts(hyp.ids) and len(hyp.ids) < max_len


def test_the_grammar_travels_as_data_and_reads_back_the_same():
    import json

    from hmer_runtime.engine.model_spec import ModelSpec
    from hmer_runtime.recognizer import BUNDLED_MODEL
    from hmer_runtime.text.grammar import NEEDS, grammar_tables, needs_from_tables

    tables = json.loads(json.dumps(grammar_tables()))  # as model.json holds it
    assert needs_from_tables(tables) == NEEDS and needs_from_tables({}) == NEEDS
    assert ModelSpec.load(BUNDLED_MODEL).grammar == tables
    seq = VOCAB.encode(tokenize(r"\sqrt[3]{x^{2}}+\frac{a}{b}"))
    changed = LatexGrammar(VOCAB, needs_from_tables({"needs": {**tables["needs"], "\\frac": ["{"]}}))
    assert LatexGrammar(VOCAB, needs_from_tables(tables)).accepts(seq) and not changed.accepts(seq)
