"""The web bundle as a user meets it: built by ``hmer-web build``, served by a static file server on
loopback, drawn on with synthetic pointer events in headless Chromium, read in the browser.

The tokens the page shows must be those ``hmer-run`` (the Python Recognizer) reads from the same
strokes, greedy and beam 5. Skipped where Chromium or npm (for onnxruntime-web) is unavailable.
"""

import functools
import http.server
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from synth import expression_strokes

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


class _Site:
    def __init__(self, root: Path):
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from hmer_export.web import build_site

    root = build_site(None, tmp_path_factory.mktemp("web") / "site", log=lambda s: None)
    served = _Site(root)
    yield root, served
    served.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1000,760"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_script_timeout(180)
    yield driver
    driver.quit()


def _wait(driver, script: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}; error: {driver.execute_script(ERROR)}")


ERROR = "return document.getElementById('error').textContent"
READY = "return window.hmerReady || document.getElementById('error').textContent"


def _loaded(driver) -> float:
    """Milliseconds the page took to load the model (window.hmerReady); fails with the page's error."""
    ready = _wait(driver, READY)
    assert not isinstance(ready, str), ready
    return float(ready)


def _draw(driver, strokes) -> list:
    """Draw ``strokes`` on the pad as a pen would (pointer events along each stroke); returns what the pad recorded."""
    driver.execute_script("document.getElementById('clear').click()")
    driver.execute_script("""
        const pad = document.getElementById('pad'), r = pad.getBoundingClientRect();
        const fire = (type, [x, y]) => pad.dispatchEvent(new PointerEvent(type, {
            clientX: r.left + x, clientY: r.top + y, pointerId: 1, pointerType: 'pen', bubbles: true,
            isPrimary: true, pressure: 0.5}));
        for (const stroke of arguments[0]) {
            fire('pointerdown', stroke[0]);
            stroke.slice(1).forEach(p => fire('pointermove', p));
            fire('pointerup', stroke[stroke.length - 1]);
        }""", strokes)
    return driver.execute_script("return hmerPad.strokes")


def _read(driver, beam: int) -> dict:
    """Choose ``beam``, press Recognize, and return what the page shows."""
    driver.execute_script("window.hmerLast = null; const s = document.getElementById('beam'); s.value = arguments[0];"
                          "document.getElementById('recognize').click()", str(beam))
    last = _wait(driver, "return window.hmerLast || (document.getElementById('error').textContent && "
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
        # nearly the same model input: the render by the training convention (capsules in place of
        # PIL's polygons, so an edge pixel may cross the ink threshold on one side only), cut and padded
        h, w, data = browser.execute_script(
            "const r = hmerRecognizer.spec, x = hmer.modelInput(hmer.renderInk(arguments[0], r.render), r.preprocess);"
            "return [x.height, x.width, Array.from(x.data)]", strokes)
        want = python[1].load(strokes)
        assert abs(h - want.shape[0]) <= 1 and abs(w - want.shape[1]) <= 1, ((h, w), want.shape)
        hh, ww = min(h, want.shape[0]), min(w, want.shape[1])
        gaps.append(float(np.abs(np.array(data, dtype=np.float32).reshape(h, w)[:hh, :ww] - want[:hh, :ww]).mean()))
        for beam, rec in python.items():
            got = _read(browser, beam)
            expected = rec.recognize(strokes)
            assert got["tokens"] == expected.tokens, (beam, got["latex"], expected.latex)
            assert abs(got["score"] - expected.score) < 0.2  # near, not equal: the model inputs differ a little
    assert max(gaps) < 0.02, gaps  # mean |difference| of the two model inputs, ink 0..1
    assert browser.execute_script("return document.querySelector('#rendered .katex') !== null")


def test_a_second_visit_works_with_the_server_stopped(site, browser, tmp_path):
    root, served = site
    browser.get(served.url)
    _wait(browser, READY)
    _wait(browser, "return navigator.serviceWorker.controller !== null")  # installed: every file cached
    served.stop()
    browser.get(served.url)  # the service worker answers from its cache
    assert _loaded(browser)
    _draw(browser, _drawings()[2])
    assert _read(browser, 1)["tokens"]
    shot = os.environ.get("HMER_WEB_SCREENSHOT")  # docs/web-offline.png is taken this way
    browser.save_screenshot(shot or str(tmp_path / "offline.png"))
