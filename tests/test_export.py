"""hmer-export: graphs that match PyTorch at any batch/size, int8 variant, metadata, bad inputs."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tiny import random_checkpoint

from hmer_export.check import scribble_images
from hmer_export.exporter import ExportOptions, export_checkpoint
from hmer_runtime.engine.model_spec import METADATA_KEY, ModelSpec
from hmer_runtime.engine.onnx_model import OnnxModel
from hmer_runtime.engine.providers import ProviderConfig
from hmer_runtime.errors import ModelError
from hmer_runtime.inputs.preprocess import pad_batch
from hmer_runtime.text.grammar import LatexGrammar
from hmer_train.checkpoint import load_model
from hmer_train.decoding import TorchDecoder, decode, encode_each_image, memory_logprob, rescore_r2l

CPU = ProviderConfig("cpu")


@pytest.fixture(scope="module", params=["comer", "wap"])
def exported(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    ckpt = random_checkpoint(tmp, request.param)
    raw = export_checkpoint(ckpt, tmp / "model", ExportOptions(int8=True, fp16=True), log=lambda s: None)
    return ckpt, tmp / "model", raw


def test_written_files_metadata_and_no_control_flow(exported):
    ckpt, model_dir, raw = exported
    graphs = {"encoder.onnx", "decoder.onnx", "decoder.int8.onnx", "encoder.fp16.onnx", "decoder.fp16.onnx"}
    weights = set()
    if raw["architecture"]["decoder"]["type"] == "comer":  # parallel teacher forcing: a scorer graph
        graphs |= {"scorer.onnx", "scorer.fp16.onnx"}
        weights = {"decoder.weights", "decoder.fp16.weights"}  # the tensors step and scorer graphs share
        assert raw["variants"]["int8"]["scorer"] == "scorer.onnx"  # rescoring shares the fp32 scorer
        assert raw["variants"]["fp32"]["weights"] == raw["variants"]["int8"]["weights"] == "decoder.weights"
        assert raw["variants"]["fp16"]["weights"] == "decoder.fp16.weights"
    assert {p.name for p in model_dir.iterdir()} == graphs | weights | {"model.json", "LICENSE"}
    assert raw["variants"]["int8"]["encoder"] == "encoder.onnx"  # convolutions stay fp32
    assert raw["checkpoint"]["weights"] == "trained"  # a checkpoint without a moving average
    spec = ModelSpec.load(model_dir)
    assert spec.vocab.tokens == raw["vocab"] and spec.state and spec.memory
    for name in graphs:
        graph = onnx.load(str(model_dir / name))
        onnx.checker.check_model(graph)
        assert not {n.op_type for n in graph.graph.node} & {"If", "Loop", "Scan"}
        meta = json.loads({p.key: p.value for p in graph.metadata_props}[METADATA_KEY])
        assert meta["checkpoint"]["sha256"] == raw["checkpoint"]["sha256"] and meta["vocab"] == raw["vocab"]
    check = raw["variants"]["fp32"]["check"]
    assert check["greedy_equal"] == check["images"] == check["beam_equal"]
    if weights:  # no tensor of the decoder is stored twice: each large one lives in the weights file
        from hmer_export.shared_weights import MIN_BYTES

        for variant in ("fp32", "fp16"):
            files = raw["variants"][variant]
            held = [onnx.load(str(model_dir / files[g]), load_external_data=False).graph.initializer
                    for g in ("decoder", "scorer")]
            inline = [t.raw_data for tensors in held for t in tensors if len(t.raw_data) >= MIN_BYTES]
            assert len(inline) == len(set(inline))
            assert sum(t.data_location == onnx.TensorProto.EXTERNAL for t in held[0]) > 0
    # TensorRT profiles name every dynamic decoder input, with steps starting at 0.
    lo, opt, hi = raw["tensorrt_profiles"]["decoder"]
    for s in spec.state:
        assert f"state_in.{s.name}:" in lo
    assert lo.count(":") == 2 + len(spec.memory) + len(spec.state)


@pytest.mark.parametrize("sizes", [[(40, 70)], [(30, 50), (64, 200), (48, 90)]])
def test_onnx_matches_pytorch_at_any_batch_and_size(exported, sizes):
    ckpt, model_dir, _ = exported
    model, vocab, _ = load_model(ckpt)
    onnx_model = OnnxModel(ModelSpec.load(model_dir), "fp32", CPU)
    rng = np.random.default_rng(len(sizes))
    images = [(rng.random((h, w)) > 0.8).astype(np.float32) for h, w in sizes]
    x, m = pad_batch(images, 16)
    tx, tm = torch.from_numpy(x), torch.from_numpy(m)
    with torch.no_grad():
        t_mem = encode_each_image(model, tx, tm)
    o_mem, o_state = onnx_model.encode(x, m)
    for k, v in o_mem.items():
        assert v.shape == tuple(t_mem[k].shape)
        assert np.allclose(v, t_mem[k].numpy(), atol=1e-4)
    spec = ModelSpec.load(model_dir)
    assert spec.decode.rescore == (spec.architecture["decoder"]["type"] == "comer")
    bound = OnnxModel(spec, "fp32", CPU, io_binding=True)  # the CUDA code path, on CPU OrtValues
    assert spec.decode.grammar  # exported on by default; both sides constrained (or not) alike
    for beam, grammar in ((1, True), (3, True), (3, False)):
        constraint = LatexGrammar(vocab) if grammar else None
        want = decode(model, tx, tm, vocab.sos_id, vocab.eos_id, beam, 12, constraint=constraint)
        if beam > 1 and spec.decode.rescore:
            want = rescore_r2l(model, tx, tm, want, vocab.sos_id, vocab.eos_id)
        for runner in (onnx_model, bound):
            got = runner.decode(x, m, spec.decode.with_overrides(beam=beam, max_len=12, grammar=grammar))
            assert [h[0].ids for h in got] == [h[0].ids for h in want]
            assert np.allclose([h[0].score for h in got], [h[0].score for h in want], atol=1e-3)


def test_a_batch_decodes_each_image_as_it_would_alone(exported):
    """Finished images stay in the graph until half the rows are done, then leave it: neither
    changes what the others decode."""
    _, model_dir, _ = exported
    spec = ModelSpec.load(model_dir)
    model = OnnxModel(spec, "fp32", CPU)
    images = scribble_images(spec.render, spec.preprocess, n=6, seed=5)
    x, m = pad_batch(images, spec.stride)  # each image alone is padded as in the batch
    for beam in (1, 3):
        options = spec.decode.with_overrides(beam=beam, max_len=12)
        together = model.decode(x, m, options)
        alone = [model.decode(x[i:i + 1], m[i:i + 1], options)[0] for i in range(len(images))]
        assert [[h.ids for h in hs] for hs in together] == [[h.ids for h in hs] for hs in alone]
        np.testing.assert_allclose([h.score for hs in together for h in hs], [h.score for hs in alone for h in hs],
                                   atol=1e-4)


def test_an_image_reads_the_same_whatever_its_batch_mates(exported):
    """The encoder has no mask, so padding changes the features of an image; each image is
    encoded at its own size instead, and a batch reads it as it reads alone, on both sides."""
    ckpt, model_dir, _ = exported
    spec = ModelSpec.load(model_dir)
    onnx_model = OnnxModel(spec, "fp32", CPU)
    model, vocab, _ = load_model(ckpt)
    images = scribble_images(spec.render, spec.preprocess, n=5, seed=11)
    images.append(np.pad(images[0], ((0, 40), (0, 120))))  # a much larger batch mate
    x, m = pad_batch(images, spec.stride)
    memory, _ = onnx_model.encode(x, m)
    grid = memory["mask"].shape[1:]
    flat = {t.name: t.shape.index("length") - 1 for t in spec.memory if "length" in t.shape}  # axis, batch row taken
    assert flat

    def unflatten(row: np.ndarray, axis: int, hw) -> np.ndarray:
        return row.reshape(row.shape[:axis] + tuple(hw) + row.shape[axis + 1:])
    for i, im in enumerate(images):
        alone, _ = onnx_model.encode(*pad_batch([im], spec.stride))
        h, w = alone["mask"].shape[1:]
        assert (memory["mask"][i, :h, :w] == alone["mask"][0]).all() and memory["mask"][i].sum() == alone["mask"].sum()
        for name, axis in flat.items():  # the features at each place of the map are the image's own
            together = unflatten(memory[name][i], axis, grid)[(slice(None),) * axis + (slice(0, h), slice(0, w))]
            np.testing.assert_allclose(together, unflatten(alone[name][0], axis, (h, w)), atol=1e-5)
    options = spec.decode.with_overrides(beam=3, max_len=12)
    torch_decoder = TorchDecoder(model, vocab)
    for runner, as_input in ((onnx_model, lambda a: a), (torch_decoder, torch.from_numpy)):
        together = runner.decode(as_input(x), as_input(m), options)
        alone = [runner.decode(*map(as_input, pad_batch([im], spec.stride)), options)[0] for im in images]
        assert [[h.ids for h in hs] for hs in together] == [[h.ids for h in hs] for hs in alone]
        np.testing.assert_allclose([h.score for hs in together for h in hs], [h.score for hs in alone for h in hs],
                                   atol=1e-4)


def test_beams_share_their_image_memory_and_decode_as_with_copies(exported):
    """A comer step graph takes one memory row per image (model.json ``shared_memory``); fed one
    copy per hypothesis instead, it decodes the same, in every search."""
    from dataclasses import replace

    _, model_dir, raw = exported
    spec = ModelSpec.load(model_dir)
    assert spec.shared_memory == (raw["architecture"]["decoder"]["type"] == "comer")
    if not spec.shared_memory:
        return
    shared, copied = OnnxModel(spec, "fp32", CPU), OnnxModel(replace(spec, shared_memory=False), "fp32", CPU)
    x, m = pad_batch(scribble_images(spec.render, spec.preprocess, n=5, seed=3), spec.stride)
    for options in (spec.decode.with_overrides(beam=1, max_len=12), spec.decode.with_overrides(beam=4, max_len=12),
                    spec.decode.with_overrides(beam=3, max_len=12, search="comer")):
        a, b = shared.decode(x, m, options), copied.decode(x, m, options)
        assert [[h.ids for h in hs] for hs in a] == [[h.ids for h in hs] for hs in b]
        np.testing.assert_allclose([h.score for hs in a for h in hs], [h.score for hs in b for h in hs], atol=1e-4)


def test_scorer_graph_rescores_as_the_step_graph_does(exported):
    ckpt, model_dir, raw = exported
    spec = ModelSpec.load(model_dir)
    if spec.scorer_path() is None:
        assert raw["architecture"]["decoder"]["type"] == "wap"  # its teacher forcing is a loop
        return
    model, vocab, _ = load_model(ckpt)
    images = scribble_images(spec.render, spec.preprocess, n=4, seed=3)
    x, m = pad_batch(images, spec.stride)
    with_scorer, stepwise = OnnxModel(spec, "fp32", CPU), OnnxModel(spec, "fp32", CPU)
    stepwise.scorer = None
    memory, state = with_scorer.encode(x, m)
    sequences = [[5, 6, 7], [], [8] * 11, [9, 5], [6]]
    images_of = np.array([0, 1, 3, 3, 2])
    one_call = with_scorer.sequence_logprob(memory, state, images_of, sequences, vocab.eos_id, vocab.sos_id)
    by_step = stepwise.sequence_logprob(memory, state, images_of, sequences, vocab.eos_id, vocab.sos_id)
    np.testing.assert_allclose(one_call, by_step, atol=1e-4)
    with torch.no_grad():
        tm = model.encode(torch.from_numpy(x), torch.from_numpy(m))
        eager = memory_logprob(model, {k: v[torch.from_numpy(images_of)] for k, v in tm.items()}, sequences,
                               vocab.eos_id, vocab.sos_id)
    np.testing.assert_allclose(one_call, eager, atol=1e-4)
    for beam in (2, 4):  # rescored beams: the same ranking and scores either way
        options = spec.decode.with_overrides(beam=beam, max_len=12)
        a, b = with_scorer.decode(x, m, options), stepwise.decode(x, m, options)
        assert [[h.ids for h in hs] for hs in a] == [[h.ids for h in hs] for hs in b]
        np.testing.assert_allclose([h.score for hs in a for h in hs], [h.score for hs in b for h in hs], atol=1e-4)


def test_fp16_variant_runs_close_to_fp32(exported):
    _, model_dir, raw = exported
    rep = raw["variants"]["fp16"]["check"]  # fp16 runs on the CPU provider too (slowly), so it is checked
    assert rep["logits_max_abs"] < 0.05 and rep["greedy_agreement"] >= 0.5
    graph = onnx.load(str(model_dir / "decoder.fp16.onnx"))
    weights = [t for t in graph.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    assert sum(t.data_type == onnx.TensorProto.FLOAT16 for t in weights) > 0.9 * len(weights)


def test_int8_variant_runs_close_to_fp32(exported):
    _, model_dir, raw = exported
    spec = ModelSpec.load(model_dir)
    fp32, int8 = OnnxModel(spec, "fp32", CPU), OnnxModel(spec, "int8", CPU)
    images = scribble_images(spec.render, spec.preprocess, n=3, seed=5)
    x, m = pad_batch(images, spec.stride)
    (mem32, st32), (mem8, st8) = fp32.encode(x, m), int8.encode(x, m)
    tokens = np.full(len(images), spec.vocab.sos_id, dtype=np.int64)
    l32, _, _ = fp32.step(tokens, st32, mem32)
    l8, _, _ = int8.step(tokens, st8, mem8)
    assert np.isfinite(l8).all() and np.abs(l8 - l32).max() < 0.25 * np.abs(l32).max() + 0.1
    rep = raw["variants"]["int8"]["check"]
    assert 0.0 <= rep["greedy_agreement"] <= 1.0 and rep["images"] > 0
    fp32_bytes = sum((model_dir / raw["variants"]["fp32"][k]).stat().st_size for k in ("decoder", "weights")
                     if k in raw["variants"]["fp32"])  # the step graph and the tensors it shares with the scorer
    assert (model_dir / "decoder.int8.onnx").stat().st_size < 0.6 * fp32_bytes


def _cli(monkeypatch, capsys, *args):
    from hmer_export.cli import run

    monkeypatch.setattr(sys, "argv", ["hmer-export", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        run()
    return e.value.code, capsys.readouterr()


def test_bad_inputs_give_one_clear_line(tmp_path, monkeypatch, capsys):
    ckpt = random_checkpoint(tmp_path, "comer")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[:5000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("do not delete")
    cases = [(tmp_path / "missing.pt", tmp_path / "o1", "checkpoint not found"),
             (truncated, tmp_path / "o2", "not a readable checkpoint"),
             (foreign, tmp_path / "o3", "not an hmer checkpoint"),
             (ckpt, blocker / "out", "a-file"),
             (ckpt, existing, "already exists; use --force")]
    for src, out, message in cases:
        code, cap = _cli(monkeypatch, capsys, src, out)
        assert code == 1, (src, out, cap)
        lines = cap.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
        assert "Traceback" not in cap.err
    assert (existing / "keep.txt").read_text() == "do not delete"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    with pytest.raises(ModelError):
        export_checkpoint(ckpt, existing, ExportOptions(check=False), log=lambda s: None)
    export_checkpoint(ckpt, existing, ExportOptions(check=False, force=True), log=lambda s: None)
    assert (existing / "model.json").is_file() and not (existing / "keep.txt").exists()


def test_hmer_eval_gives_the_same_predictions_for_checkpoint_and_export(exported, tmp_path):
    from hmer_train.cli_eval import EvalOptions, evaluate_checkpoint

    ckpt, model_dir, _ = exported
    data = ckpt.parent / "data"  # the tiny synthetic set the checkpoint's config points at
    rows = {}
    for search in ("hmer", "comer"):  # --search replaces the model's decode.search on both sides
        for name, model in (("torch", ckpt), ("onnx", model_dir)):
            out = tmp_path / f"{name}-{search}.jsonl"
            summary = evaluate_checkpoint(str(model), str(data), None,
                                          EvalOptions(beam=2, batch_size=4, provider="cpu", search=search), str(out))
            assert summary["n"] == 6
            rows[name, search] = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["prediction"] for r in rows["torch", search]] == [r["prediction"] for r in rows["onnx", search]]
    # CoMER's search scores by both readings, so its scores are not the left-to-right beam's
    assert [r["score"] for r in rows["onnx", "hmer"]] != [r["score"] for r in rows["onnx", "comer"]]


def test_input_scale_travels_with_the_export(exported, tmp_path):
    """hmer-export --input-scale: model.json renders and preprocesses at that multiple of the
    training size, and hmer-eval of the checkpoint at the same scale reads the same images."""
    from hmer_train.cli_eval import EvalOptions, evaluate_checkpoint

    ckpt, _, plain = exported
    raw = export_checkpoint(ckpt, tmp_path / "scaled", ExportOptions(check=False, input_scale=1.5), log=lambda s: None)
    assert raw["decode"]["input_scale"] == 1.5
    for section, key in (("render", "symbol_px"), ("render", "line_width"), ("preprocess", "symbol_px"),
                         ("preprocess", "stroke_width")):
        assert raw[section][key] == pytest.approx(1.5 * plain[section][key])
    data = ckpt.parent / "data"
    preds = {}
    for name, model, scale in (("torch", ckpt, 1.5), ("onnx", tmp_path / "scaled", None)):
        out = tmp_path / f"{name}.jsonl"
        evaluate_checkpoint(str(model), str(data), None,
                            EvalOptions(beam=1, batch_size=4, provider="cpu", input_scale=scale), str(out))
        preds[name] = [json.loads(line)["prediction"] for line in out.read_text().splitlines()]
    assert preds["torch"] == preds["onnx"]
    with pytest.raises(ModelError, match="re-export with hmer-export --input-scale"):
        evaluate_checkpoint(str(tmp_path / "scaled"), str(data), None, EvalOptions(beam=1, input_scale=1.0))


def test_hmer_bench_measures_every_variant_and_baseline(exported, tmp_path, monkeypatch, capsys):
    from hmer_bench.latency import run

    ckpt, model_dir, _ = exported
    out = tmp_path / "bench.json"
    monkeypatch.setattr(sys, "argv", ["hmer-bench", "--model", str(model_dir), "--checkpoint", str(ckpt),
                                      "--beam", "1,2", "--batch", "1,2", "--runs", "1", "--lengths", "3,6",
                                      "--limit", "4", "-o", str(out), "--markdown", str(tmp_path / "bench.md"),
                                      "--json"])
    run()
    report = json.loads(out.read_text())
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # --json: one row a line
    assert [r["variant"] for r in printed] == [r["variant"] for r in report["rows"]]
    kinds = {(r["variant"], r["beam"], r["batch"]) for r in report["rows"]}
    assert kinds == {(v, b, n) for v in ("pytorch-eager", "fp32", "int8") for b in (1, 2) for n in (1, 2)}
    assert all(r["p50_ms"] > 0 and r["expressions"] == 4 for r in report["rows"])
    assert all(r["vs_eager"] > 0 for r in report["rows"] if r["variant"] != "pytorch-eager")
    sweep = report["sweep"]
    assert set(sweep["cached fp32"]) == {"3", "6"}
    if ckpt.name.startswith("comer"):
        assert set(sweep["no-cache fp32"]) == {"3", "6"}
    assert "| fp32 | cpu | 1 | 1 |" in (tmp_path / "bench.md").read_text()


def test_check_catches_a_wrong_graph(tmp_path, monkeypatch):
    """A step graph that is slightly off (as a bad lowering would be) fails the export."""
    from hmer_export import graphs
    from hmer_export.check import ExportCheckError

    original = graphs.StepGraph.forward

    def skewed(self, tokens, beam_index, *tensors):
        logits, *rest = original(self, tokens, beam_index, *tensors)
        return (logits + 0.01 * torch.arange(logits.shape[-1]), *rest)

    monkeypatch.setattr(graphs.StepGraph, "forward", skewed)
    with pytest.raises(ExportCheckError, match="differ from PyTorch"):
        export_checkpoint(random_checkpoint(tmp_path, "wap"), tmp_path / "out", log=lambda s: None)
    assert not (tmp_path / "out").exists()


def test_web_build_without_npm_says_what_is_missing(tmp_path, monkeypatch):
    import subprocess
    import sys

    env = {**os.environ, "PATH": str(tmp_path / "empty"), "HMER_CACHE": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-m", "hmer_export.web", "build", str(tmp_path / "site")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith("error: npm: not found") and "onnxruntime-web@" in p.stderr
    assert not (tmp_path / "site").exists() and not list(tmp_path.glob(".site.building*"))  # nothing half-built
    p = subprocess.run([sys.executable, "-m", "hmer_export.web", "build", str(tmp_path / "nope"), str(tmp_path / "s")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1 and "model directory not found" in p.stderr


def test_web_build_refuses_folders_it_did_not_build(tmp_path, monkeypatch):
    import subprocess
    import sys

    from hmer_export.web import SITE_MARKER, SiteError, check_site_folder

    model = tmp_path / "models" / "m"
    model.mkdir(parents=True)
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    work = tmp_path / "work" / "here"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    for bad, why in ((model, "holds the model"), (model.parent, "holds the model"), (work, "current directory"),
                     (work.parent, "current directory"), (Path(".."), "current directory"),
                     (mine / "thesis.tex", "is a file"), (mine, "not an earlier hmer-web build")):
        with pytest.raises(SiteError, match=why):
            check_site_folder(bad, model)
    for bad in (model, work):  # --force never reaches these
        with pytest.raises(SiteError):
            check_site_folder(bad, model, force=True)
    check_site_folder(mine, model, force=True)
    check_site_folder(tmp_path / "new", model)
    (tmp_path / "empty").mkdir()
    check_site_folder(tmp_path / "empty", model)
    earlier = tmp_path / "site"
    earlier.mkdir()
    (earlier / SITE_MARKER).write_text("")
    (earlier / "index.html").write_text("old")
    check_site_folder(earlier, model)
    # the command: one line naming the folder, and the user's files (and a stray OUT.building) kept
    (tmp_path / "notes.building").mkdir()
    (tmp_path / "notes.building" / "keep.txt").write_text("mine too")
    env = {**os.environ, "PATH": str(tmp_path / "empty"), "HMER_CACHE": str(tmp_path / "cache")}
    for args in ([str(mine)], [str(mine), "--force"]):
        p = subprocess.run([sys.executable, "-m", "hmer_export.web", "build", *args], capture_output=True,
                           text=True, env=env, timeout=120)
        assert p.returncode == 1 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
        assert (mine / "thesis.tex").read_text() == "years of work"  # with --force it fails later, at npm
    assert "notes: is a folder that is not an earlier hmer-web build" in subprocess.run(
        [sys.executable, "-m", "hmer_export.web", "build", str(mine)], capture_output=True, text=True, env=env,
        timeout=120).stderr
    assert (tmp_path / "notes.building" / "keep.txt").read_text() == "mine too"
