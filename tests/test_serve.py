"""hmer-serve: API behaviour and every bad input, micro-batching (FastAPI test client, no network)."""

import asyncio
import io

import pytest
from http_cases import check_bad_requests, png
from PIL import Image
from synth import expression_strokes

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from hmer_runtime.recognizer import Recognizer  # noqa: E402
from hmer_runtime.serving.batching import MicroBatcher  # noqa: E402
from hmer_runtime.serving.requests import Limits  # noqa: E402
from hmer_runtime.serving.serve import ServeOptions, create_app  # noqa: E402

STROKES = [s.tolist() for s in expression_strokes(list("x+1"))]
LIMITS = Limits(max_body_bytes=200_000, max_pixels=1_000_000, max_strokes=50, max_points=5_000)


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture(scope="module")
def client(model_dir):
    with TestClient(create_app(ServeOptions(str(model_dir), provider="cpu", batch_wait_ms=2), LIMITS)) as c:
        yield c


@pytest.fixture(scope="module")
def expression_png(model_dir) -> bytes:
    from hmer_runtime.inputs.inkml import Ink
    from hmer_runtime.inputs.render import RenderConfig, render_ink

    return png(render_ink(Ink.from_strokes(STROKES), RenderConfig(symbol_px=20, line_width=2)))


def test_info_endpoints_and_page(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/v1/model").json()
    assert info["provider"] == "cpu" and info["vocab_size"] > 4 and info["architecture"]["decoder"]["type"] == "comer"
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "http" not in page.text.split("<body>")[1]
    script, style = client.get("/hmer.js"), client.get("/pad.css")  # the Pad the page draws with, and its look
    assert "class Pad" in script.text and script.headers["content-type"].startswith("text/javascript")
    assert "#pad" in style.text and style.headers["content-type"].startswith("text/css")
    assert "/v1/recognize" in client.get("/openapi.json").text


def test_strokes_and_images_match_the_recognizer(client, model_dir, expression_png):
    rec = Recognizer(model_dir, provider="cpu")
    r = client.post("/v1/recognize", json={"strokes": STROKES, "beam": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {"latex", "tokens", "score", "mathml", "ms"} <= set(body)
    assert body["tokens"] == rec.recognize(STROKES, beam=2).tokens
    want = rec.recognize(Image.open(io.BytesIO(expression_png))).tokens
    multipart = client.post("/v1/recognize", files={"file": ("x.png", expression_png, "image/png")})
    raw = client.post("/v1/recognize", content=expression_png, headers={"Content-Type": "image/png"})
    assert multipart.status_code == raw.status_code == 200
    assert multipart.json()["tokens"] == raw.json()["tokens"] == want
    att = client.post("/v1/recognize?attention=true", json={"strokes": STROKES}).json()
    assert len(att["attention"]) == len(att["tokens"])


def test_bad_requests_get_a_json_error_and_the_server_keeps_serving(client, expression_png):
    check_bad_requests(client.post, LIMITS, expression_png, STROKES)
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/recognize", json={"strokes": STROKES}).status_code == 200


def test_micro_batcher_gathers_concurrent_requests(model_dir):
    rec = Recognizer(model_dir, provider="cpu")
    images = [rec.load([[[0, 0], [10 + 5 * i, 8]], [[0, 10], [12, 2 + i]]]) for i in range(6)]

    async def scenario(wait_ms):
        batcher = MicroBatcher(rec, wait_ms=wait_ms, max_batch=16)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(im, rec.resolve(beam=1), False) for im in images))
        await batcher.stop()
        return batcher.batches, [r.tokens for r in results]

    batched, tokens = asyncio.run(scenario(50))
    single, tokens_single = asyncio.run(scenario(0))
    assert batched == 1 and single == len(images)
    # the batcher decodes at the beam it is given (1), the Recognizer by default at the model's (10)
    assert tokens == tokens_single == [rec.decode_images([im], beam=1)[0].tokens for im in images]


def test_admission_keeps_heavy_inputs_in_their_own_bounded_lane():
    """A slow heavy job does not delay a light one; a second heavy one waits its turn, a third is
    refused; a job past the deadline is answered Busy; requests past max_in_flight are refused."""
    import threading
    import time

    from hmer_runtime.serving.admission import Admission, Busy

    release = threading.Event()
    admission = Admission(Limits(preprocess_threads=1, max_heavy=2, max_in_flight=2, timeout_s=30))

    async def scenario():
        far = time.monotonic() + 30
        slow = asyncio.ensure_future(admission.preprocess(lambda: release.wait(10) and "heavy", True, far))
        queued = asyncio.ensure_future(admission.preprocess(lambda: "heavy 2", True, far))
        await asyncio.sleep(0.05)
        assert admission.heavy_queued == 2
        with pytest.raises(Busy, match="large inputs"):
            await admission.preprocess(lambda: "heavy 3", True, far)
        assert await admission.preprocess(lambda: "light", False, far) == "light"  # not behind the heavy
        assert not slow.done()
        release.set()
        assert (await slow, await queued) == ("heavy", "heavy 2")
        await asyncio.sleep(0.05)
        assert admission.heavy_queued == 0
        with pytest.raises(Busy, match="took longer"):
            await admission.preprocess(lambda: time.sleep(0.5), False, time.monotonic() + 0.05)
        with admission.request(), admission.request():
            with pytest.raises(Busy, match="2 requests in flight"):
                with admission.request():
                    pass
        assert admission.in_flight == 0

    asyncio.run(scenario())
    admission.close()


def test_heavy_ink_is_served_and_a_full_server_answers_503(model_dir):
    import numpy as np

    zig = [[0.0 if i % 2 == 0 else 400.0, float(i % 7)] for i in range(300)]  # long as drawn, few points
    limits = Limits(heavy_ink_length=50_000)
    with TestClient(create_app(ServeOptions(str(model_dir), provider="cpu"), limits)) as c:
        from hmer_runtime.inputs.inkml import Ink
        from hmer_runtime.inputs.render import ink_length

        rec = Recognizer(model_dir, provider="cpu")
        assert ink_length(Ink.from_strokes(STROKES + [zig]), rec.spec.render) > limits.heavy_ink_length
        r = c.post("/v1/recognize", json={"strokes": STROKES + [zig], "beam": 1})
        assert r.status_code == 200, r.text
        info = c.get("/v1/model").json()
        assert info["admission"] == {"in_flight": 0, "heavy_queued": 0}
        assert info["heavy_batching"]["decoded"] == 1 and info["batching"]["decoded"] == 0
        wide = c.post("/v1/recognize", json={"strokes": STROKES, "beam": rec.options.beam + 1})
        assert wide.status_code == 200  # a beam wider than the model's decodes apart too
        assert c.get("/v1/model").json()["heavy_batching"]["decoded"] == 2
        assert np.isfinite(r.json()["score"]) or r.json()["score"] is None
    with TestClient(create_app(ServeOptions(str(model_dir), provider="cpu"), Limits(max_in_flight=0))) as c:
        r = c.post("/v1/recognize", json={"strokes": STROKES})
        assert r.status_code == 503 and "server busy" in r.json()["error"]
        assert c.get("/healthz").status_code == 200


def test_the_api_returns_confidence_and_the_n_best_readings(client):
    r = client.post("/v1/recognize", json={"strokes": STROKES, "beam": 3, "n_best": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["token_confidence"]) == len(body["tokens"]) and "confidence" in body
    assert len(body["alternatives"]) <= 2 and all(a["tokens"] != body["tokens"] for a in body["alternatives"])
    assert "alternatives" not in client.post("/v1/recognize", json={"strokes": STROKES, "beam": 3}).json()
    bad = client.post("/v1/recognize", json={"strokes": STROKES, "beam": 2, "n_best": 3})
    assert bad.status_code == 422 and "n_best" in bad.json()["error"]
