"""The web bundle in headless Chromium: download size, cold load, and ms per expression, against Python.

    python -m benchmarks.web_latency --data ../shared/data/crohme/crohme-2014.tar.gz --limit 100

Builds the site (``hmer-web build``), serves it on loopback and opens it in a fresh Chromium
profile: the time to the first result on a cold load (navigation, model download and WebAssembly
compilation, one greedy reading), the model load on a second visit (from the service worker's
cache), then each expression's ink recognised in the page at each beam width, timed in the page
(render to LaTeX). The same strokes go through the Python Recognizer: the tokens are compared, and
the two model inputs (mean absolute difference, ink 0..1, and how often their sizes differ).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from hmer_runtime.cli_util import CONTEXT_SETTINGS, run_cli
from hmer_runtime.recognizer import Recognizer

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1000,760")
RECOGNIZE = """const done = arguments[arguments.length - 1];
hmerRecognizer.recognize(arguments[0], {beam: arguments[1]})
  .then(r => done({tokens: r.tokens, score: r.score, ms: r.ms, h: r.input.height, w: r.input.width,
                   data: arguments[2] ? Array.from(r.input.data) : null}))
  .catch(e => done({error: String(e.message || e)}))"""


def chromium(profile: str | None = None):
    """Headless Chromium under selenium (Debian's chromium + chromium-driver), with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in CHROMIUM_FLAGS + ((f"--user-data-dir={profile}",) if profile else ()):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    driver.set_script_timeout(300)
    return driver


def wait_for(driver, script: str, timeout: float = 120.0):
    """Poll ``script`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"the page did not answer {script!r} within {timeout} s")


READY = "return window.hmerReady || document.getElementById('error').textContent"


def draw_strokes(driver, strokes: list) -> list:
    """Draw ``strokes`` (canvas pixels) on the page's pad as a pen would: pointerdown, a
    pointermove per point, pointerup, once the page has loaded and made its pad. Returns the
    strokes the pad recorded (``hmerPad.strokes``), read in the same script that drew them."""
    wait_for(driver, PAD_READY, timeout=60)
    return driver.execute_script("""
        const pad = document.getElementById('pad'), r = pad.getBoundingClientRect();
        const fire = (type, [x, y]) => pad.dispatchEvent(new PointerEvent(type, {
            clientX: r.left + x, clientY: r.top + y, pointerId: 1, pointerType: 'pen', bubbles: true,
            isPrimary: true, pressure: 0.5}));
        for (const stroke of arguments[0]) {
            fire('pointerdown', stroke[0]);
            stroke.slice(1).forEach(p => fire('pointermove', p));
            fire('pointerup', stroke[stroke.length - 1]);
        }
        return hmerPad.strokes;""", strokes)


PAD_READY = "return document.readyState === 'complete' && !!window.hmerPad"
PAGE_STATE = ("return {url: location.href, state: document.readyState, "
              "loads: performance.getEntriesByType('navigation').map(e => e.type)}")


def _strokes(data: str | None, limit: int) -> list[list]:
    if data is None:
        import json

        root = Path(__file__).resolve().parents[1] / "examples" / "strokes"
        return [json.loads(f.read_text())["strokes"] for f in sorted(root.glob("*.json"))][:limit]
    from hmer_runtime.inputs.sources import iter_source

    out = []
    for sample in iter_source(data):
        try:
            ink = sample.load()
        except Exception:  # noqa: BLE001 - an unreadable file is left out, as hmer-eval leaves it
            continue
        out.append([t[:, :2].round(2).tolist() for t in ink.traces if len(t)])
        if len(out) == limit:
            break
    return out


def _stats(ms: list[float]) -> str:
    return f"{np.mean(ms):.0f} | {np.percentile(ms, 50):.0f} | {np.percentile(ms, 90):.0f}"


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--model", "model_dir", type=click.Path(file_okay=False), help="Model directory (default: bundled).")
@click.option("--data", type=click.Path(exists=True), help="InkML source (default: examples/strokes).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--beams", default="1,5", show_default=True)
@click.option("--variant", type=click.Choice(["auto", "fp32", "int8"]), default="auto", show_default=True)
def main(model_dir, data, limit, beams, variant) -> None:
    """Measure the web bundle in headless Chromium and compare its readings with Python's."""
    from hmer_export.web import build_site, serve_site

    beam_list = [int(b) for b in beams.split(",")]
    strokes = _strokes(data, limit)
    with tempfile.TemporaryDirectory() as tmp:
        root = build_site(model_dir, Path(tmp) / "site", variant, log=lambda s: None)
        sizes: dict[str, int] = {}
        for f in root.rglob("*"):
            if f.is_file():
                part = "graphs" if f.suffix == ".onnx" else "onnxruntime-web" if f.parent.name == "ort" else \
                    "KaTeX" if "katex" in f.parts else "page, runtime, model.json"
                sizes[part] = sizes.get(part, 0) + f.stat().st_size
        server = serve_site(root)
        driver = chromium(str(Path(tmp) / "profile"))
        try:
            t0 = time.perf_counter()
            driver.get(server.url)
            wait_for(driver, READY)
            first = driver.execute_async_script(RECOGNIZE, strokes[0], 1, False)
            cold_first = (time.perf_counter() - t0) * 1000
            wait_for(driver, "return navigator.serviceWorker.controller !== null")
            t0 = time.perf_counter()
            driver.get(server.url)
            wait_for(driver, READY)
            warm_load = (time.perf_counter() - t0) * 1000
            variant = driver.execute_script("return hmerRecognizer.variant")
            rows = []
            for beam in beam_list:
                rec = Recognizer(model_dir, "cpu", variant, beam=beam)
                ms, same, gaps, resized = [], 0, [], 0
                for s in strokes:
                    got = driver.execute_async_script(RECOGNIZE, s, beam, beam == beam_list[0])
                    if "error" in got:
                        raise click.ClickException(f"the page failed: {got['error']}")
                    ms.append(got["ms"])
                    want = rec.recognize(s)
                    same += got["tokens"] == want.tokens
                    if got["data"] is not None:
                        x = rec.load(s)
                        h, w = min(got["h"], x.shape[0]), min(got["w"], x.shape[1])
                        resized += (got["h"], got["w"]) != x.shape
                        page = np.asarray(got["data"], dtype=np.float32).reshape(got["h"], got["w"])
                        gaps.append(float(np.abs(page[:h, :w] - x[:h, :w]).mean()))
                rows.append((beam, ms, same, gaps, resized))
        finally:
            driver.quit()
            server.shutdown()
    total = sum(sizes.values())
    click.echo(f"{len(strokes)} expressions ({data or 'examples/strokes'}), {variant} decoder, headless Chromium, "
               f"onnxruntime-web WebAssembly, 1 thread\n")
    click.echo("| part | MB |\n|---|---|")
    for part, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
        click.echo(f"| {part} | {size / 1e6:.1f} |")
    click.echo(f"| **total** | **{total / 1e6:.1f}** |\n")
    click.echo(f"cold load to the first result (greedy, {len(first['tokens'])} tokens): {cold_first:.0f} ms; "
               f"second visit, model ready: {warm_load:.0f} ms\n")
    click.echo("| beam | mean ms | p50 ms | p90 ms | tokens identical to Python |\n|---|---|---|---|---|")
    for beam, ms, same, _, _ in rows:
        click.echo(f"| {beam} | {_stats(ms)} | {same}/{len(strokes)} |")
    _, _, _, gaps, resized = rows[0]
    click.echo(f"\nmodel inputs, page against Python: mean |difference| {np.mean(gaps):.4f} (max {np.max(gaps):.4f}), "
               f"size differs by a pixel on {resized}/{len(strokes)}")


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
