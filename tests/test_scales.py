"""Reading one input at several sizes (decode.scales): the views, the pooling rule, the
confidence's agreement feature, and the same reading through the facade, hmer-run and hmer-eval."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from synth import expression_strokes

from hmer_runtime.cli_run import main as run_main
from hmer_runtime.decoding.confidence import FEATURES, features
from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.decoding.hypothesis import Hypothesis
from hmer_runtime.decoding.pooling import own_size, pool, view_options
from hmer_runtime.inputs.inkml import Ink
from hmer_runtime.inputs.render import at_scale, model_inputs, render_ink
from hmer_runtime.recognizer import Recognizer

SCALES = (0.87, 1.0, 1.15)


def _strokes(symbols: str = "2x+1") -> list:
    return [(s * 0.5 + [20, 40]).round(1).tolist() for s in expression_strokes(list(symbols), unit=100)]


def test_pool_keeps_the_best_score_of_any_view_and_marks_its_view():
    small = [Hypothesis([1], -0.4, -0.2), Hypothesis([2], -1.0, -0.5)]
    large = [Hypothesis([3], -0.2, -0.1), Hypothesis([1], -0.6, -0.3)]
    pooled = pool([small, large])
    assert [(h.ids, h.view) for h in pooled] == [([3], 1), ([1], 0), ([1], 1), ([2], 0)]
    tie = pool([[Hypothesis([1], -0.2, -0.1)], [Hypothesis([2], -0.2, -0.1)]])
    assert tie[0].ids == [1]  # a tie goes to the earlier view
    assert pool([[Hypothesis([1], math.nan, math.nan)], [Hypothesis([2], -5.0, -5.0)]])[0].ids == [2]


def test_features_count_the_views_that_agree_and_judge_the_best_within_its_view():
    def view(best, rival):
        return [Hypothesis(best, -0.1, -0.05, token_logprobs=[-0.05] * len(best)),
                Hypothesis(rival, -3.0, -1.5, token_logprobs=[-1.0] * len(rival))]

    agreeing = pool([view([5, 6], [5, 7]), view([5, 6], [5, 8]), view([5, 6], [9])])
    split = pool([view([5, 6], [5, 7]), view([5, 7], [5, 6]), view([9], [5, 6])])
    a, b = features(agreeing), features(split)
    agree = FEATURES.index("scales_agree")
    assert len(a) == len(FEATURES) and a[agree] == 1.0 and b[agree] == pytest.approx(1 / 3)
    assert a[:agree] == features(view([5, 6], [5, 7]))[:agree]  # the rest: its own view's beam only
    assert features(view([5, 6], [5, 7]))[agree] == 1.0  # one view agrees with itself


def test_scales_are_validated_and_travel_in_model_json():
    opts = DecodeOptions(scales=[0.87, 1, 1.15])  # a list from YAML or JSON
    assert opts.scales == SCALES and hash(opts)  # hashable: the server groups requests by options
    assert DecodeOptions.from_model_json(opts.to_model_json()) == opts
    assert DecodeOptions.from_model_json({"max_len": 10}).scales == (1.0,)  # older models: one size
    for bad in ((), (1.0, 1.0), (0.0,), (20.0,)):
        with pytest.raises(ValueError, match="scales"):
            DecodeOptions(scales=bad)


def test_the_models_own_size_gets_the_full_beam_and_the_others_the_side_beam():
    opts = DecodeOptions(beam=10, scales=(0.8, 1.0, 1.25), side_beam=3)
    assert [o.beam for o in view_options(opts, 3)] == [3, 10, 3]
    assert view_options(opts, 1) == [opts]  # one view (a preprocessed input) is read at the full beam
    assert [o.beam for o in view_options(opts.with_overrides(beam=2), 3)] == [2, 2, 2]  # never wider
    assert [o.beam for o in view_options(DecodeOptions(beam=4, scales=(0.8, 1.0)), 2)] == [4, 4]  # None: beam
    assert own_size((0.9, 1.2)) == 0 and own_size((1.3, 1.1, 0.85)) == 1
    with pytest.raises(ValueError, match="2 views"):
        view_options(opts, 2)
    assert DecodeOptions.from_model_json(opts.to_model_json()) == opts
    assert DecodeOptions.from_model_json({"max_len": 10}).side_beam is None  # older models: every size at beam
    with pytest.raises(ValueError, match="side_beam"):
        DecodeOptions(side_beam=0)


def test_a_view_draws_ink_larger_with_the_same_pen(tiny_model_dir):
    spec = Recognizer(tiny_model_dir, "cpu").spec
    ink = Ink.from_strokes(_strokes())
    small, plain, large = model_inputs(ink, spec.render, spec.preprocess, "x", SCALES)
    assert small.shape[1] < plain.shape[1] < large.shape[1]
    ratio = (large.shape[1] - 2 * spec.preprocess.pad) / (plain.shape[1] - 2 * spec.preprocess.pad)
    assert ratio == pytest.approx(1.15, rel=0.05)
    ink_px = [float((v > 0.5).sum(0).clip(max=1).sum()) for v in (plain, large)]  # columns with ink
    stroke = [float((v > 0.5).sum()) / max(1.0, float(np.count_nonzero(v.max(0) > 0.5))) for v in (plain, large)]
    assert ink_px[1] > ink_px[0] and stroke[1] == pytest.approx(stroke[0], rel=0.25)  # same pen, longer strokes
    assert at_scale(spec.render, 1.0) == spec.render
    # an image drawn with the model's own pen and size is trusted to have it, then scaled
    image = render_ink(ink, spec.render)
    views = model_inputs(image, spec.render, spec.preprocess, "x", SCALES)
    assert views[1].shape == plain.shape and views[0].shape[1] < plain.shape[1] < views[2].shape[1]
    assert (views[2].shape[1] - 2 * spec.preprocess.pad) / (plain.shape[1] - 2 * spec.preprocess.pad) == \
        pytest.approx(1.15, rel=0.05)


def test_the_recognizer_keeps_the_best_scoring_size(tiny_model_dir):
    rec = Recognizer(tiny_model_dir, "cpu", beam=3, scales=SCALES)
    strokes = _strokes()
    alone = [Recognizer(tiny_model_dir, "cpu", beam=3, scales=(f,)).recognize(strokes) for f in SCALES]
    best = max(range(len(SCALES)), key=lambda i: alone[i].score)
    got = rec.recognize(strokes, attention=True)
    assert got.tokens == alone[best].tokens and got.score == pytest.approx(alone[best].score)
    assert got.image.shape == rec.load_views(strokes)[best].shape  # the view it was read at
    # a batch reads each input as it reads it alone, and a preprocessed input stays one view
    batch = rec.recognize_batch([strokes, _strokes("y-7"), "missing.png"], batch_size=1)
    assert batch[0].tokens == got.tokens and batch[2].error is not None
    one = rec.decode_images([rec.load(strokes)])[0]
    assert one.tokens == Recognizer(tiny_model_dir, "cpu", beam=3).recognize(strokes).tokens


def test_the_side_sizes_are_read_at_the_side_beam(tiny_model_dir):
    rec = Recognizer(tiny_model_dir, "cpu", beam=3, scales=SCALES, side_beam=1)
    inputs = [rec.load_views(s) for s in (_strokes(), _strokes("y-7"))]
    got = rec.decode_images(inputs)
    for views, result in zip(inputs, got):
        alone = [rec.decode_images([v], beam=3 if f == 1.0 else 1)[0] for v, f in zip(views, SCALES)]
        best = max(range(len(SCALES)), key=lambda i: alone[i].score)
        assert result.tokens == alone[best].tokens and result.score == pytest.approx(alone[best].score, abs=1e-5)
    out = CliRunner().invoke(run_main, [str(rec.spec.directory), "--side-beam", "0"])
    assert out.exit_code == 2 and "--side-beam" in out.output


def test_hmer_run_and_hmer_eval_take_scales(tiny_model_dir, tmp_path):
    ink = tmp_path / "x.json"
    ink.write_text(json.dumps({"strokes": _strokes()}))
    out = CliRunner().invoke(run_main, [str(ink), "--model", str(tiny_model_dir), "--beam", "2", "--json",
                                        "--scales", "0.87,1,1.15"])
    assert out.exit_code == 0, out.output
    want = Recognizer(tiny_model_dir, "cpu", beam=2, scales=SCALES).recognize(_strokes())
    assert json.loads(out.output)["tokens"] == want.tokens
    bad = CliRunner().invoke(run_main, [str(ink), "--model", str(tiny_model_dir), "--scales", "1,x"])
    assert bad.exit_code == 2 and "--scales" in bad.output and "Traceback" not in bad.output


def test_the_server_reads_at_the_models_scales(tiny_model_dir, tmp_path):
    pytest.importorskip("fastapi")
    import shutil

    from fastapi.testclient import TestClient

    from hmer_runtime.serving.serve import ServeOptions, create_app

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    raw = json.loads((model / "model.json").read_text())
    raw["decode"]["scales"] = list(SCALES)
    (model / "model.json").write_text(json.dumps(raw))
    rec = Recognizer(model, "cpu")
    assert rec.options.scales == SCALES
    with TestClient(create_app(ServeOptions(str(model), provider="cpu", batch_wait_ms=2))) as client:
        for strokes in (_strokes(), _strokes("y-7")):
            r = client.post("/v1/recognize", json={"strokes": strokes, "beam": 2})
            assert r.status_code == 200, r.text
            want = rec.recognize(strokes, beam=2)
            assert r.json()["tokens"] == want.tokens and r.json()["score"] == pytest.approx(want.score, abs=1e-4)
