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
        results = await asyncio.gather(*(batcher.submit(im, 1, False) for im in images))
        await batcher.stop()
        return batcher.batches, [r.tokens for r in results]

    batched, tokens = asyncio.run(scenario(50))
    single, tokens_single = asyncio.run(scenario(0))
    assert batched == 1 and single == len(images)
    # the batcher decodes at the beam it is given (1), the Recognizer by default at the model's (10)
    assert tokens == tokens_single == [rec.decode_images([im], beam=1)[0].tokens for im in images]
