"""The web bundle as a user meets it: built by ``hmer-web build``, served by a static file server on
loopback, drawn on with synthetic pointer events in headless Chromium, read in the browser.

The tokens the page shows must be those ``hmer-run`` (the Python Recognizer) reads from the same
strokes, greedy and beam 5. Skipped where Chromium or npm (for onnxruntime-web) is unavailable.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from synth import expression_strokes

from hmer_bench.web_latency import READY, chromium, draw_strokes, wait_for
from hmer_runtime.recognizer import Recognizer

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
CACHED = Path(os.environ.get("HMER_CACHE", Path.home() / ".cache" / "hmer")) / "npm"
pytestmark = [pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium/chromedriver not installed"),
              pytest.mark.skipif(not shutil.which("npm") and not list(CACHED.glob("onnxruntime-web-*.tgz")),
                                 reason="npm not installed (the web build takes onnxruntime-web from npm)")]
ROOT = Path(__file__).resolve().parents[1]


def _drawings() -> list[list]:
    """The example drawings, and two longer expressions of our own glyphs, in canvas pixels."""
    out = []
    for f in sorted((ROOT / "examples" / "strokes").glob("*.json")):
        out.append([[[x + 40, y + 40] for x, y in s] for s in json.loads(f.read_text())["strokes"]])
    for symbols in (list("2x+1=y-7"), list("4y-3=x+10")):
        out.append([(s * 0.45 + [30, 90]).round(1).tolist() for s in expression_strokes(symbols, unit=100)])
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from hmer_export.web import build_site, serve_site

    # fp32: the page must read exactly what hmer-run reads (int8 kernels round differently in WebAssembly)
    root = build_site(None, tmp_path_factory.mktemp("web") / "site", variant="fp32", log=lambda s: None)
    served = serve_site(root)
    yield root, served
    served.shutdown()
    served.server_close()


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


def _loaded(driver) -> float:
    """Milliseconds the page took to load the model (window.hmerReady); fails with the page's error."""
    ready = wait_for(driver, READY)
    assert not isinstance(ready, str), ready
    return float(ready)


def _draw(driver, strokes) -> list:
    driver.execute_script("document.getElementById('clear').click()")
    return draw_strokes(driver, strokes)


def _read(driver, beam: int) -> dict:
    """Choose ``beam``, press Recognize, and return what the page shows."""
    driver.execute_script("window.hmerLast = null; const s = document.getElementById('beam'); s.value = arguments[0];"
                          "document.getElementById('recognize').click()", str(beam))
    last = wait_for(driver, "return window.hmerLast || (document.getElementById('error').textContent && "
                         "{error: document.getElementById('error').textContent})")
    assert "error" not in last, last
    shown = driver.execute_script("return document.getElementById('latex').textContent")
    assert shown == last["latex"] and last["beam"] == beam
    return last


def test_the_page_reads_drawn_ink_as_hmer_run_does(site, browser):
    root, served = site
    browser.get(served.url)
    assert _loaded(browser)
    spec = json.loads((root / "model.json").read_text())
    python = {beam: Recognizer(None, "cpu", spec["web"]["variant"], beam=beam) for beam in (1, 5)}
    gaps = []
    for drawing in _drawings():
        strokes = _draw(browser, drawing)
        assert len(strokes) == len(drawing)
        # the same model input: the render by the same convention and capsule pen, cut and padded
        h, w, data = browser.execute_script(
            "const r = hmerRecognizer.spec, x = hmer.modelInput(hmer.renderInk(arguments[0], r.render), r.preprocess);"
            "return [x.height, x.width, Array.from(x.data)]", strokes)
        want = python[1].load(strokes)
        assert (h, w) == want.shape
        gaps.append(float(np.abs(np.array(data, dtype=np.float32).reshape(h, w) - want).max()))
        for beam, rec in python.items():
            got = _read(browser, beam)
            expected = rec.recognize(strokes)
            assert got["tokens"] == expected.tokens, (beam, got["latex"], expected.latex)
            assert abs(got["score"] - expected.score) < 0.2  # near, not equal: the model inputs differ a little
    assert max(gaps) < 0.005, gaps  # largest |difference| of a pixel (ink 0..1): float32 rounding only
    assert browser.execute_script("return document.querySelector('#rendered .katex') !== null")


def test_the_site_carries_the_weights_licence(site):
    root, _ = site
    assert "CC-BY-NC-SA-3.0" in (root / "LICENSE").read_text()
    assert json.loads((root / "model.json").read_text())["license"]["spdx"] == "CC-BY-NC-SA-3.0"


def test_a_second_visit_works_with_the_server_stopped(site, browser, tmp_path):
    root, served = site
    browser.get(served.url)
    _loaded(browser)
    wait_for(browser, "return navigator.serviceWorker.controller !== null")  # installed: every file cached
    served.shutdown()
    served.server_close()
    browser.get(served.url)  # the service worker answers from its cache
    assert _loaded(browser)
    _draw(browser, _drawings()[2])
    assert _read(browser, 1)["tokens"]
    shot = os.environ.get("HMER_WEB_SCREENSHOT")  # docs/web-offline.png is taken this way
    browser.save_screenshot(shot or str(tmp_path / "offline.png"))


def test_a_model_with_comers_search_gets_the_browsers_search_and_a_note(tmp_path):
    """hmer.js has only hmer's search: the site's model.json says so, and hmer-web tells the user."""
    from hmer_export.web import browser_decode
    from hmer_runtime.engine.model_spec import ModelSpec
    from hmer_runtime.recognizer import BUNDLED_MODEL

    bundled = ModelSpec.load(BUNDLED_MODEL)
    assert browser_decode(bundled) == (bundled.raw["decode"], None)
    comer = tmp_path / "comer"
    shutil.copytree(BUNDLED_MODEL, comer)
    raw = json.loads((comer / "model.json").read_text())
    raw["decode"]["search"] = "comer"
    (comer / "model.json").write_text(json.dumps(raw))
    decode, note = browser_decode(ModelSpec.load(comer))
    assert decode == {**raw["decode"], "search": "hmer"} and decode["rescore_r2l"]
    assert "CoMER's search" in note and "rescored right to left" in note
