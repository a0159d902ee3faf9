"""The bundled default model: loads with no arguments, reads the sample, reproduces its model card."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hmer_runtime.engine.model_spec import ModelSpec
from hmer_runtime.recognizer import BUNDLED_MODEL, Recognizer

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "models" / "cpu-v3" / "last.pt"  # the bundle's source (slim: weights only)


def test_bundled_model_recognises_the_sample_out_of_the_box():
    rec = Recognizer(provider="cpu")
    assert rec.spec.directory == BUNDLED_MODEL and rec.provider == "cpu"
    result = rec.recognize(ROOT / "examples" / "sample.png", beam=5)
    assert result.tokens and result.latex == " ".join(result.tokens)
    p = subprocess.run([str(Path(sys.executable).parent / "hmer-run"), str(ROOT / "examples" / "sample.png")],
                       capture_output=True, text=True)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 1, p.stderr


def test_bundled_files_are_small_and_described():
    spec = ModelSpec.load(BUNDLED_MODEL)
    total = sum(f.stat().st_size for f in BUNDLED_MODEL.iterdir())
    assert total < 30_000_000
    assert spec.architecture["decoder"]["type"] == "comer" and "int8" in spec.variants
    assert spec.raw["evaluation"], "model.json lacks the model card's evaluation (benchmarks/evaluate_model.py)"


def test_the_committed_checkpoint_is_the_bundles_source():
    """models/cpu-v3/last.pt is what the bundle was exported from."""
    assert hashlib.sha256(CHECKPOINT.read_bytes()).hexdigest() == ModelSpec.load(BUNDLED_MODEL).checkpoint_sha256


@pytest.mark.realdata
def test_hmer_eval_reproduces_the_model_card(crohme_dir, tmp_path):
    """The card's greedy fp32 figures on CROHME 2014 come out of a fresh evaluation exactly."""
    from hmer_train.cli_eval import EvalOptions, evaluate_checkpoint

    card = ModelSpec.load(BUNDLED_MODEL).raw["evaluation"]["crohme-2014 onnx fp32 beam 1"]
    got = evaluate_checkpoint(str(BUNDLED_MODEL), str(crohme_dir / "crohme-2014.tar.gz"), None,
                              EvalOptions(beam=1, provider="cpu", progress=False))
    assert got["n"] == card["n"] and round(got["exprate"], 2) == card["exprate"]
    assert round(got["wer"], 2) == card["wer"]


@pytest.mark.realdata
def test_onnx_and_pytorch_agree_on_crohme_2014(crohme_dir, tmp_path):
    """The export parity on real data, bounded to 60 expressions (the full figure is in the card)."""
    from hmer_train.cli_eval import EvalOptions, evaluate_checkpoint

    spec = ModelSpec.load(BUNDLED_MODEL)
    preds = {}
    scale = spec.decode.input_scale  # the checkpoint reads what the export reads
    for name, model, input_scale in (("torch", CHECKPOINT, scale), ("onnx", BUNDLED_MODEL, None)):
        out = tmp_path / f"{name}.jsonl"
        options = EvalOptions(beam=1, limit=60, provider="cpu", input_scale=input_scale, grammar=spec.decode.grammar,
                              scales=spec.decode.scales, progress=False)
        evaluate_checkpoint(str(model), str(crohme_dir / "crohme-2014.tar.gz"), None, options, str(out))
        preds[name] = [json.loads(line)["prediction"] for line in out.read_text().splitlines()]
    same = sum(a == b for a, b in zip(preds["torch"], preds["onnx"]))
    assert same >= 0.98 * len(preds["torch"]), f"{same}/{len(preds['torch'])}"
