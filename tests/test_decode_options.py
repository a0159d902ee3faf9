"""DecodeOptions: one decode policy, read from model.json or a checkpoint's config."""


import pytest

from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_train.config import Config, reading


def test_model_json_round_trip_and_defaults():
    opts = DecodeOptions(beam=10, max_len=150, length_penalty=0.8, grammar=True, rescore=True, input_scale=1.4)
    assert DecodeOptions.from_model_json(opts.to_model_json()) == opts
    assert opts.to_model_json()["rescore_r2l"] is True and "rescore" not in opts.to_model_json()
    # a model.json written before search/rescore_r2l existed decodes as it did then
    old = DecodeOptions.from_model_json({"max_len": 200, "length_penalty": 1.0, "beam": 10, "grammar": True})
    assert (old.search, old.rescore, old.input_scale) == ("hmer", False, 1.0)


def test_overrides_replace_only_what_is_given():
    opts = DecodeOptions(beam=10, grammar=True, rescore=True)
    assert opts.with_overrides(beam=None, grammar=None) == opts
    greedy = opts.with_overrides(beam=1, grammar=False)
    assert (greedy.beam, greedy.grammar, greedy.rescore, greedy.max_len) == (1, False, True, 200)


def test_rescoring_applies_to_beams_of_the_hmer_search_only():
    assert DecodeOptions(beam=5, rescore=True).rescores
    assert not DecodeOptions(beam=1, rescore=True).rescores  # greedy has nothing to re-rank
    assert not DecodeOptions(beam=5, rescore=True, search="comer").rescores  # CoMER rescores inside its search
    assert not DecodeOptions(beam=5).rescores


def test_n_best_is_the_callers_and_never_stored_in_model_json():
    opts = DecodeOptions(beam=10, rescore=True).with_overrides(n_best=3)
    assert opts.n_best == 3 and "n_best" not in opts.to_model_json()
    assert DecodeOptions.from_model_json(opts.to_model_json()).n_best == 1


@pytest.mark.parametrize("bad", [{"beam": 0}, {"max_len": 0}, {"search": "viterbi"}, {"n_best": 0}])
def test_invalid_options_are_refused(bad):
    with pytest.raises(ValueError):
        DecodeOptions(**bad)


def test_checkpoint_config_decides_rescoring_by_architecture_and_training():
    cfg = Config()
    opts = reading(cfg).decode
    assert opts.rescore and opts.grammar and opts.beam == cfg.decode.beam
    # no right-to-left reading was trained
    assert not reading(cfg.updated({"train.bidirectional": False})).decode.rescore
    assert not reading(cfg.updated({"model.decoder": {"type": "wap"}})).decode.rescore
