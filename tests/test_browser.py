"""The drawing pad in a real browser: headless Chromium draws with pointer events on a served page.

Needs Debian's chromium + chromium-driver (``make browser-deps`` installs them where apt works);
skipped cleanly where they are absent.
"""

import os
import shutil

import httpx
import pytest
from tiny import random_checkpoint

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium/chromedriver not installed")

# A pen path "x + 1" in canvas pixels.
DRAWING = [[(40, 60), (100, 160)], [(100, 60), (40, 160)], [(150, 110), (230, 110)], [(190, 70), (190, 150)],
           [(270, 80), (300, 55), (300, 165)]]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from hmer_export.exporter import export_checkpoint

    model = os.environ.get("HMER_BROWSER_MODEL")  # default: a tiny random model exported here
    if not model:
        tmp = tmp_path_factory.mktemp("browser")
        export_checkpoint(random_checkpoint(tmp, "comer"), tmp / "model", log=lambda s: None)
        model = str(tmp / "model")
    from hmer_bench.serve_load import launch

    proc, url = launch(["--model", model, "--provider", "cpu"])
    yield url
    proc.terminate()
    proc.wait(10)


def test_draw_on_the_canvas_and_read_the_latex(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from hmer_bench.web_latency import PAGE_STATE, chromium, draw_strokes

    driver = chromium()
    try:
        driver.get(server + "/")
        # Synthetic pointer events, as a pen or finger would send them, every tenth of a segment.
        dense = [[[a[0] + t / 10 * (b[0] - a[0]), a[1] + t / 10 * (b[1] - a[1])] for a, b in zip(s, s[1:])
                  for t in range(10)] + [list(s[-1])] for s in DRAWING]
        strokes = draw_strokes(driver, dense)
        assert len(strokes) == len(DRAWING) and all(len(s) > 5 for s in strokes), (
            [len(s) for s in strokes], driver.execute_script(PAGE_STATE), driver.get_log("browser"))
        Select(driver.find_element(By.ID, "beam")).select_by_value("1")
        driver.find_element(By.ID, "recognize").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "latex").text.strip()
                                        or d.find_element(By.ID, "error").text.strip())
        assert driver.find_element(By.ID, "error").text == ""
        shown = driver.find_element(By.ID, "latex").text.strip()
        api = httpx.post(f"{server}/v1/recognize?beam=1", json={"strokes": strokes}, timeout=30).json()
        assert shown == api["latex"]
        assert driver.find_element(By.ID, "mathml").get_attribute("innerHTML").startswith("<math")
        shot = os.environ.get("HMER_SCREENSHOT")  # docs/serve-page.png: HMER_BROWSER_MODEL=<the bundle>
        driver.save_screenshot(shot or str(tmp_path / "page.png"))
    finally:
        driver.quit()
