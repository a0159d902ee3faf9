"""The shared search: finished images and sequences leave the batch without changing any result."""

from __future__ import annotations

import numpy as np
import pytest

from hmer_runtime.decoding.driver import rescore_right_to_left
from hmer_runtime.decoding.hypothesis import Hypothesis
from hmer_runtime.decoding.search import (
    beam_search,
    bidirectional_search,
    combine_r2l,
    greedy,
    teacher_forced_inputs,
)

VOCAB, SOS, EOS = 12, 1, 2


class ToyDecoder:
    """A deterministic decoder over numpy: logits depend on the image (its memory row) and the
    tokens so far (a running hash in the state), and each image prefers to end after its own
    length. Records the batch size of every step and checks that memory rows follow the state."""

    def __init__(self, lengths: list[int]):
        self.lengths = lengths
        self.batches: list[int] = []

    def start(self, rows: np.ndarray):
        # state: (image id, hash of the prefix, length); memory: the image id of each row
        state = np.stack([rows, np.zeros_like(rows), np.zeros_like(rows)], axis=1).astype(np.int64)
        return state, {"image": rows.copy()}

    def logits(self, image: int, prefix: int, length: int) -> np.ndarray:
        rng = np.random.default_rng([image, prefix, length])
        out = rng.normal(0, 1.5, VOCAB)
        out[[0, SOS]] = -30
        out[EOS] = -4.0 + 3.0 * (length - self.lengths[image])
        return out

    def search_fns(self, memory: dict):
        held = {"memory": memory}

        def step(tokens, state):
            assert np.array_equal(held["memory"]["image"], state[:, 0]), "memory rows out of step with the state"
            self.batches.append(len(tokens))
            logits = np.stack([self.logits(int(i), int(h), int(n)) for i, h, n in state])
            new = state.copy()
            new[:, 1] = (state[:, 1] * 31 + tokens) % 1_000_003
            new[:, 2] += 1
            return logits, np.zeros((len(tokens), 1, 1)), new

        def reorder(state, rows):
            if len(rows) != len(held["memory"]["image"]):
                held["memory"] = {k: v[rows] for k, v in held["memory"].items()}
            return state[rows]

        return step, reorder


LENGTHS = [2, 25, 5, 12, 1, 8]


def _batched_and_alone(search):
    toy = ToyDecoder(LENGTHS)
    together = search(toy, np.arange(len(LENGTHS)))
    alone = [search(ToyDecoder(LENGTHS), np.array([i]))[0] for i in range(len(LENGTHS))]
    return toy, together, alone


def _same(a, b):
    assert [h.ids for h in a] == [h.ids for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=0, atol=1e-9)


@pytest.mark.parametrize("rule", ["hmer", "comer"])
@pytest.mark.parametrize("beam", [2, 5])
def test_beam_search_drops_finished_images_and_finds_the_same(rule, beam):
    def search(toy, images):
        state, memory = toy.start(np.repeat(images, beam))
        step, reorder = toy.search_fns(memory)
        return beam_search(step, reorder, state, len(images), beam, SOS, EOS, 40, rule=rule)

    toy, together, alone = _batched_and_alone(search)
    for a, b in zip(together, alone):
        _same(a, b)
    assert toy.batches[0] == beam * len(LENGTHS) and toy.batches[-1] == beam  # the long one ends alone
    assert sorted(toy.batches, reverse=True) == toy.batches


def test_greedy_drops_finished_sequences_and_finds_the_same():
    def search(toy, images):
        state, memory = toy.start(images)
        step, reorder = toy.search_fns(memory)
        return [[h] for h in greedy(step, state, len(images), SOS, EOS, 40, reorder=reorder)]

    toy, together, alone = _batched_and_alone(search)
    for a, b in zip(together, alone):
        _same(a, b)
    assert toy.batches[0] == len(LENGTHS) and toy.batches[-1] == 1
    # without reorder, every row runs to the end (the old behaviour), with the same results
    plain = ToyDecoder(LENGTHS)
    state, memory = plain.start(np.arange(len(LENGTHS)))
    step, _ = plain.search_fns(memory)
    for a, b in zip(greedy(step, state, len(LENGTHS), SOS, EOS, 40), together):
        _same([a], b)
    assert set(plain.batches) == {len(LENGTHS)}


def test_bidirectional_search_with_dropping_matches_one_image_at_a_time():
    beam = 3

    def search(toy, images):
        n = len(images)
        state, memory = toy.start(np.tile(np.repeat(images, beam), 2))
        step, reorder = toy.search_fns(memory)

        def rate(idx, sequences, start, end):  # any deterministic rating of whole sequences
            return [float(-len(s) - 0.1 * sum(s) - 0.01 * images[i]) for i, s in zip(idx, sequences)]

        return bidirectional_search(step, reorder, state, n, beam, SOS, EOS, 30, 1.0, rate)

    _, together, alone = _batched_and_alone(search)
    for a, b in zip(together, alone):
        _same(a, b)


def test_teacher_forced_inputs_lay_out_both_directions():
    inputs, targets = teacher_forced_inputs([[5, 6], [], [7]], start=EOS, end=SOS)
    assert inputs.tolist() == [[EOS, 5, 6], [EOS, EOS, EOS], [EOS, 7, EOS]]
    assert targets.tolist() == [[5, 6, SOS], [SOS, -1, -1], [7, SOS, -1]]


class ToyScorer:
    """A backend whose right-to-left log-probabilities come from a seeded generator per
    sequence; records every sequence it is asked to read."""

    def __init__(self):
        self.read: list[tuple[int, ...]] = []

    def sequence_logprob(self, memory, state, images, sequences, start, end):
        assert start == EOS and end == SOS
        self.read += [tuple(s) for s in sequences]
        return [-float(np.random.default_rng(list(s) + [int(i)]).exponential(2.0)) for i, s in zip(images, sequences)]


def toy_beams(images: int, beam: int, seed: int) -> list[list[Hypothesis]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(images):
        hs = []
        for _ in range(beam):
            ids = [int(t) for t in rng.integers(3, VOCAB, rng.integers(1, 8))]
            lp = -float(rng.exponential(3.0))
            hs.append(Hypothesis(ids, lp, lp / (len(ids) + 1)))
        out.append(sorted(hs, key=lambda h: -h.score))
    return out


@pytest.mark.parametrize("keep", [1, 2, 4])
def test_rescoring_reads_only_contenders_and_ranks_the_top_as_reading_all_does(keep):
    hyps = toy_beams(40, 6, seed=keep)
    everything = ToyScorer()
    full = combine_r2l(hyps, [everything.sequence_logprob(None, None, np.full(len(hs), i), [h.ids[::-1] for h in hs],
                                                          EOS, SOS) for i, hs in enumerate(hyps)])
    pruned_backend = ToyScorer()
    pruned = rescore_right_to_left(pruned_backend, {}, {}, hyps, 1.0, SOS, EOS, keep)
    for a, b in zip(full, pruned):
        assert [h.ids for h in a[:keep]] == [h.ids for h in b[:keep]]
        assert [h.score for h in a[:keep]] == [h.score for h in b[:keep]]
        unread = [h for h in b if h.r2l is None]
        assert all(h.logprob == h.l2r for h in unread)  # kept as read left to right
        assert all(h.score < b[keep - 1].score for h in unread)
    assert len(pruned_backend.read) < len(everything.read)
    assert len(pruned_backend.read) >= keep * len(hyps)
