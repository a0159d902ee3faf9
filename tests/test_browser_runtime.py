"""The browser runtime (hmer_runtime/static/hmer.js) on onnxruntime-web's WebAssembly backend, run
in Node: the same model inputs must give the Python runtime's tokens, token probabilities and
confidence, greedy and with a right-to-left rescored beam, reading the decoder's weights from the
file its step and scorer graphs share; and the same strokes, drawn at several sizes, the same
reading. Needs node, and onnxruntime-web (npm or its cached tarball).
"""

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from synth import expression_strokes

from hmer_runtime.decoding.confidence import FEATURES
from hmer_runtime.recognizer import Recognizer

ROOT = Path(__file__).resolve().parents[1]
CACHED = Path(os.environ.get("HMER_CACHE", Path.home() / ".cache" / "hmer")) / "npm"
pytestmark = [pytest.mark.skipif(not shutil.which("node"), reason="node not installed"),
              pytest.mark.skipif(not shutil.which("npm") and not list(CACHED.glob("onnxruntime-web-*.tgz")),
                                 reason="npm not installed (onnxruntime-web comes from npm)")]

SCRIPT = r"""
const fs = require("fs"), path = require("path");
const [ortFile, hmerFile, modelDir, inputsFile] = process.argv.slice(1);
(async () => {
  const ort = await import(ortFile);
  ort.env.wasm.numThreads = 1;
  globalThis.ort = ort;
  require(hmerFile);
  const spec = JSON.parse(fs.readFileSync(path.join(modelDir, "model.json"), "utf8"));
  const files = spec.variants.fp32;
  const externalData = files.weights
    ? [{ path: files.weights, data: new Uint8Array(fs.readFileSync(path.join(modelDir, files.weights))) }] : [];
  const session = name => ort.InferenceSession.create(new Uint8Array(fs.readFileSync(path.join(modelDir, name))),
    { executionProviders: ["wasm"], externalData });
  const rec = new globalThis.hmer.Recognizer(spec, "fp32", await session(files.encoder), await session(files.decoder),
    files.scorer ? await session(files.scorer) : null);
  const out = [];
  for (const { data, height, width, strokes, beam } of JSON.parse(fs.readFileSync(inputsFile, "utf8"))) {
    const r = strokes ? await rec.recognize(strokes, { beam })
      : await rec.recognizeInput({ data: Float32Array.from(data), height, width }, { beam });
    out.push({ tokens: r.tokens, confidence: r.confidence, token_confidence: r.token_confidence });
  }
  console.log(JSON.stringify(out));
  process.exit(0);  // onnxruntime-web's worker would keep Node running
})().catch(e => { console.error(e); process.exit(1); });
"""


@pytest.fixture(scope="module")
def ort_web(tmp_path_factory) -> Path:
    from hmer_export.web import ORT_WEB, npm_package

    out = tmp_path_factory.mktemp("ort-web")
    with tarfile.open(npm_package(*ORT_WEB, CACHED)) as tar:
        tar.extractall(out, filter="data")
    return out / "package" / "dist" / "ort.bundle.min.mjs"


def test_the_browser_runtime_reads_what_the_python_runtime_reads(tiny_model_dir, ort_web, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    raw = json.loads((model / "model.json").read_text())
    assert "weights" in raw["variants"]["fp32"]  # the step and scorer graphs share the decoder's tensors
    # a calibration, so the confidence is computed on both sides (the tiny model has none fitted)
    raw["confidence"] = {"features": list(FEATURES), "weights": [0.8, 0.3, 0.5, 0.4, -0.2, -0.3, 0.6], "bias": 0.1}
    raw["decode"].update(rescore_r2l=True, grammar=True, max_len=24, scales=[0.87, 1.0, 1.15])
    (model / "model.json").write_text(json.dumps(raw))
    rec = Recognizer(model, "cpu")
    drawn = [[(s * 0.5 + [20, 40]).round(1).tolist() for s in expression_strokes(list(symbols), unit=100)]
             for symbols in ("2x+1", "y-7=3")]
    images = [rec.load(strokes) for strokes in drawn]
    cases = [(im, beam) for im in images for beam in (1, 3)] + [(strokes, beam) for strokes in drawn for beam in (1, 3)]
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps([{"strokes": x, "beam": beam} if isinstance(x, list) else
                                  {"data": x.ravel().tolist(), "height": x.shape[0], "width": x.shape[1], "beam": beam}
                                  for x, beam in cases]))
    p = subprocess.run(["node", "-e", SCRIPT, ort_web.as_uri(), str(ROOT / "hmer_runtime" / "static" / "hmer.js"),
                        str(model), str(inputs)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    browser = json.loads(p.stdout)
    for (x, beam), got in zip(cases, browser):
        # strokes: drawn at the three scales, each view decoded, the best reading kept
        want = rec.recognize(x, beam=beam) if isinstance(x, list) else rec.decode_images([x], beam=beam)[0]
        assert got["tokens"] == want.tokens, beam
        np.testing.assert_allclose(got["token_confidence"], want.token_confidence, atol=1e-4)
        assert want.confidence is not None and abs(got["confidence"] - want.confidence) < 1e-4
