"""Confidence: per-token probabilities from the search, a calibrated probability that the reading
is right, and the n-best list, through the facade, hmer-run and the HTTP API."""

import json
import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from hmer_runtime.decoding.confidence import FEATURES, Calibration, expected_calibration_error, features, fit
from hmer_runtime.decoding.search import Hypothesis
from hmer_runtime.errors import ModelError
from hmer_runtime.recognizer import Recognizer


def test_fit_recovers_a_logistic_model_and_ece_measures_calibration():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2))
    p = 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.0 * x[:, 1] + 0.5)))
    y = rng.random(4000) < p
    w, b = fit(x, y, l2=0.0)
    assert np.allclose(w, [2.0, -1.0], atol=0.2) and abs(b - 0.5) < 0.2
    assert expected_calibration_error(p, y) < 0.03  # the true probabilities are calibrated
    assert expected_calibration_error(np.full(4000, 0.99), y) > 0.3  # overconfidence is not


def test_features_see_the_beams_agreement():
    sure = [Hypothesis([5, 6], -0.1, -0.03, token_logprobs=[-0.05, -0.05], l2r=-0.1, r2l=-0.1),
            Hypothesis([5, 7], -6.0, -2.0, token_logprobs=[-0.05, -5.9], l2r=-6.0, r2l=-6.0)]
    torn = [Hypothesis([5, 6], -1.0, -0.33, token_logprobs=[-0.1, -0.9], l2r=-0.5, r2l=-1.5),
            Hypothesis([5, 7], -1.1, -0.36, token_logprobs=[-0.1, -1.0], l2r=-1.6, r2l=-0.6)]
    a, b = features(sure), features(torn)
    assert len(a) == len(FEATURES)
    assert a[1] > b[1]  # the best holds more of the beam
    assert (a[2], a[3]) == (1.0, 1.0) and (b[2], b[3]) == (1.0, 0.0)  # right to left prefers the rival
    assert (a[5], b[5]) == (0.0, 1.0)  # one token chosen at p = exp(-0.9) < 0.9


def test_a_calibration_travels_in_model_json(tiny_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    raw = json.loads((model / "model.json").read_text())
    cal = Calibration(tuple([1.0] + [0.0] * (len(FEATURES) - 1)), 0.5, "test")
    raw["confidence"] = cal.to_dict()
    (model / "model.json").write_text(json.dumps(raw))
    rec = Recognizer(model, "cpu", beam=3)
    res = rec.recognize([[[0, 0], [10, 8]], [[0, 10], [12, 2]]])
    assert 0.0 < res.confidence < 1.0
    assert len(res.token_confidence) == len(res.tokens) and all(0 < p <= 1 for p in res.token_confidence)
    assert math.isclose(res.confidence, 1 / (1 + math.exp(-(res.score + 0.5))), rel_tol=1e-6)  # weight 1 on score
    assert all(a.tokens != res.tokens for a in res.alternatives)
    assert len({tuple(a.tokens) for a in res.alternatives}) == len(res.alternatives) <= 2

    from hmer_runtime.cli_run import main

    ink = tmp_path / "x.json"
    ink.write_text(json.dumps({"strokes": [[[0, 0], [10, 8]], [[0, 10], [12, 2]]]}))
    out = CliRunner().invoke(main, [str(ink), "--model", str(model), "--beam", "3", "--json", "--n-best", "3"])
    row = json.loads(out.output)
    assert 0 < row["confidence"] < 1 and len(row["token_confidence"]) == len(row["tokens"])
    assert len(row["alternatives"]) <= 2 and all("latex" in a for a in row["alternatives"])

    raw["confidence"]["weights"][0] = float("nan")
    (model / "model.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="confidence"):
        Recognizer(model, "cpu")
    raw["confidence"]["features"] = ["another"]
    (model / "model.json").write_text(json.dumps(raw))
    assert Recognizer(model, "cpu").recognize([[[0, 0], [10, 8]]]).confidence is None  # other features: none


def test_without_a_calibration_confidence_is_null_but_tokens_have_probabilities(tiny_model_dir):
    res = Recognizer(tiny_model_dir, "cpu", beam=1).recognize([[[0, 0], [10, 8]]])
    assert res.confidence is None and res.to_dict()["confidence"] is None
    assert len(res.token_confidence) == len(res.tokens)
