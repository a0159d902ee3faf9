"""``hmer-serve``: an HTTP API and a drawing-pad page on top of :class:`Recognizer` (extra ``serve``).

    POST /v1/recognize   image (multipart ``file`` or raw bytes) or JSON ink {"strokes": [[[x, y], ...], ...]}
    GET  /v1/model       what is loaded;  GET /healthz;  GET /  the drawing pad (+ /hmer.js, /pad.css);  GET /docs

Concurrent requests are gathered for up to ``batch_wait_ms`` and decoded as one batch (one
encoder call, one decoder call per step for all of them); ``batch_wait_ms=0`` decodes each alone.
"""

# No ``from __future__ import annotations`` here: FastAPI resolves the endpoint annotations
# (``Request``, imported inside create_app so the runtime does not need fastapi) at definition time.
import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from hmer_runtime.cli_util import CONTEXT_SETTINGS, run_cli
from hmer_runtime.engine.providers import ProviderConfig
from hmer_runtime.errors import TOO_LARGE, HmerError, InkError
from hmer_runtime.inputs.preprocess import load_image
from hmer_runtime.recognizer import Recognizer
from hmer_runtime.serving.batching import Backend, MicroBatcher

STATIC = Path(__file__).parents[1] / "static"
PAGE = STATIC / "index.html"  # the drawing pad; it loads hmer.js (its Pad) and pad.css from beside it


@dataclass
class Limits:
    """What one request may ask for; over a limit is a 413/422 naming the limit."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 16_000_000
    max_strokes: int = 500
    max_points: int = 50_000
    max_beam: int = 16
    timeout_s: float = 30.0
    read_timeout_s: float = 10.0  # to receive a request's headers, and then its body


class BodyTooLarge(Exception):
    pass


async def read_body(request, limit: int) -> bytes:
    """The request body, read as it streams in (chunked uploads included) and refused with
    BodyTooLarge as soon as it passes ``limit`` bytes, so an endless body is never buffered."""
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # Starlette's request.form() parses a body already read from here
    return body


try:
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError:  # the serve extra is not installed: hmer-serve says so in main()
    H11Protocol = object


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers are not all in within
    HMER_SERVE_READ_TIMEOUT seconds of connecting or of the previous response (slowloris
    clients); uvicorn itself times out only idle keep-alive connections."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        waiting_for = self.cycle  # a new request replaces self.cycle once its headers are in

        def expire() -> None:
            if self.cycle is waiting_for and not self.transport.is_closing():
                self.transport.close()

        self.loop.call_later(float(os.environ.get("HMER_SERVE_READ_TIMEOUT", Limits.read_timeout_s)), expire)


def to_mathml(latex: str) -> str | None:
    """MathML for display (latex2mathml), or None when it cannot convert the LaTeX."""
    try:
        from latex2mathml.converter import convert
    except ImportError:
        return None
    try:
        return convert(latex)
    except Exception:  # noqa: BLE001 - the converter raises assorted errors on unusual LaTeX
        return None


def create_app(model_dir: str | Path | None = None, provider: str = "auto", variant: str = "fp32",
               threads: int = 0, batch_wait_ms: float = 5.0, max_batch: int = 16,
               limits: Limits | None = None, backend: Backend | None = None):
    """The FastAPI application. By default a Recognizer behind a :class:`MicroBatcher` is loaded at
    startup (one per worker process); ``backend`` is one built already (the Ray Serve replica,
    which batches with ``@serve.batch``), and then the model settings here are unused."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException

    limits = limits or Limits()
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app):
        if backend is not None:
            state["rec"], state["batcher"] = backend.rec, backend
            yield
            return
        rec = Recognizer(model_dir, ProviderConfig(provider, threads), variant)
        state["rec"] = rec
        state["batcher"] = MicroBatcher(rec, batch_wait_ms, max_batch)
        state["batcher"].start()
        yield
        await state["batcher"].stop()

    app = FastAPI(title="hmer", summary="Handwritten mathematical expressions to LaTeX", lifespan=lifespan)

    def error(status: int, message: str) -> JSONResponse:
        """Every error the service answers has this one shape: {"error": message}."""
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError) -> JSONResponse:
        return error(422, "; ".join(str(e.get("msg", e)) for e in exc.errors()) or "invalid request")

    @app.exception_handler(Exception)
    async def internal_error(request, exc: Exception) -> JSONResponse:
        return error(500, f"internal error ({type(exc).__name__})")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/hmer.js", include_in_schema=False)
    def script() -> Response:
        return Response((STATIC / "hmer.js").read_bytes(), media_type="text/javascript")

    @app.get("/pad.css", include_in_schema=False)
    def style() -> Response:
        return Response((STATIC / "pad.css").read_bytes(), media_type="text/css")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model")
    def model_info() -> dict:
        rec: Recognizer = state["rec"]
        spec = rec.spec
        return {"architecture": spec.architecture, "parameters": spec.parameters,
                "vocab_size": len(spec.vocab), "provider": rec.provider, "variant": rec.model.variant,
                "max_len": rec.options.max_len, "beam": rec.options.beam,
                "checkpoint": spec.checkpoint,
                "batching": state["batcher"].stats()}

    def parse_options(params, body: dict | None = None) -> tuple[int, bool]:
        src = {**dict(params), **(body or {})}
        try:
            beam = int(src.get("beam", state["rec"].options.beam))  # default: the model's decode.beam
        except (TypeError, ValueError) as e:
            raise ValueError(f"beam must be an integer, got {src.get('beam')!r}") from e
        if not 1 <= beam <= limits.max_beam:
            raise ValueError(f"beam must be between 1 and {limits.max_beam}")
        attention = str(src.get("attention", "false")).lower() in ("1", "true", "yes")
        return beam, attention

    def ink_input(body: dict, rec: Recognizer) -> np.ndarray:
        strokes = body.get("strokes")
        if not isinstance(strokes, list) or not strokes:
            raise InkError("strokes", "expected a non-empty list of strokes [[[x, y], ...], ...]")
        if len(strokes) > limits.max_strokes:
            raise InkError("strokes", f"{len(strokes)} strokes, over the limit of {limits.max_strokes}",
                           TOO_LARGE)
        points = sum(len(s) if isinstance(s, list) else 0 for s in strokes)
        if points > limits.max_points:
            raise InkError("strokes", f"{points} points, over the limit of {limits.max_points}", TOO_LARGE)
        return rec.load(strokes, "strokes")

    @app.post("/v1/recognize")
    async def recognize(request: Request):
        """Recognise one expression: an image (multipart field ``file``, or the raw body) or JSON
        ``{"strokes": [[[x, y], ...], ...], "beam": 5, "attention": false}`` (beam: default the model's)."""
        rec: Recognizer = state["rec"]
        t0 = time.perf_counter()
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
            return error(413, f"request body of {declared} bytes is over the limit of {limits.max_body_bytes}")
        try:
            body = await asyncio.wait_for(read_body(request, limits.max_body_bytes), limits.read_timeout_s)
        except BodyTooLarge:
            return error(413, f"request body is over the limit of {limits.max_body_bytes} bytes")
        except asyncio.TimeoutError:
            return error(408, f"request body not received within {limits.read_timeout_s} s")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if ctype == "application/json":
                try:
                    payload = json.loads(body)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    return error(400, f"malformed JSON: {e}")
                except RecursionError:
                    return error(400, "malformed JSON: nested too deeply")
                if not isinstance(payload, dict):
                    return error(400, "JSON body must be an object with 'strokes'")
                beam, attention = parse_options(request.query_params, payload)
                image = await asyncio.get_running_loop().run_in_executor(None, ink_input, payload, rec)
            else:
                if ctype == "multipart/form-data":
                    try:
                        form = await request.form()
                    except HTTPException as e:  # python-multipart's parse errors
                        return error(400, f"malformed multipart body: {e.detail}")
                    upload = form.get("file")
                    if upload is None or isinstance(upload, str):
                        return error(400, "multipart request without a 'file' field")
                    data, name = await upload.read(), upload.filename or "upload"
                    beam, attention = parse_options(request.query_params, {k: v for k, v in form.items()
                                                                           if k != "file"})
                else:
                    data, name = body, "body"
                    beam, attention = parse_options(request.query_params)
                if not data:
                    return error(400, "empty request body: send an image or JSON strokes")

                def decode_image() -> np.ndarray:
                    return rec.load(load_image(data, name, limits.max_pixels), name)

                image = await asyncio.get_running_loop().run_in_executor(None, decode_image)
        except ValueError as e:
            return error(422, str(e))
        except HmerError as e:  # its own status: 413 over a size limit, 422 nothing to read, else 400
            return error(e.status, str(e))
        try:
            result = await asyncio.wait_for(state["batcher"].submit(image, beam, attention), limits.timeout_s)
        except asyncio.TimeoutError:
            return error(503, f"recognition took longer than {limits.timeout_s} s; try again")
        out = {**result.to_dict(), "mathml": to_mathml(result.latex), "ms": (time.perf_counter() - t0) * 1000}
        if attention and result.attention is not None:
            out["attention"] = [np.round(a, 4).tolist() for a in result.attention]
        return out

    return app


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--model", "model_dir", type=click.Path(), help="Exported model directory (default: bundled model).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]), default="auto", show_default=True)
@click.option("--variant", default="fp32", show_default=True)
@click.option("--threads", default=0, help="CPU threads per worker (0 = onnxruntime's choice).")
@click.option("--workers", default=1, show_default=True, help="Worker processes, each with its own Recognizer.")
@click.option("--batch-wait-ms", default=5.0, show_default=True, help="Micro-batching window (0 = off).")
@click.option("--max-batch", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--read-timeout", default=Limits.read_timeout_s, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a client has to send a request's headers, and then its body.")
@click.option("--ray", "on_ray", is_flag=True,
              help="Serve on a Ray cluster with Ray Serve replicas (extra ray); --workers does not apply.")
@click.option("--address", help="With --ray: the cluster to join (default: $RAY_ADDRESS, else a local instance).")
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(min=1),
              help="With --ray: replicas (the minimum, with --max-replicas).")
@click.option("--max-replicas", type=click.IntRange(min=1), help="With --ray: autoscale up to this many replicas.")
@click.option("--replica-cpus", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
              help="With --ray: CPUs each replica reserves (and its threads, unless --threads).")
@click.option("--replica-gpus", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="With --ray: GPUs each replica reserves (use with --provider cuda).")
@click.option("--debug", is_flag=True)
def main(model_dir, host, port, provider, variant, threads, workers, batch_wait_ms, max_batch, read_timeout,
         on_ray, address, replicas, max_replicas, replica_cpus, replica_gpus, debug) -> None:
    """Serve the recognition API and the drawing pad."""
    try:
        import uvicorn
    except ImportError as e:
        raise click.ClickException("hmer-serve needs the serve extra: pip install 'hmer[serve]'") from e
    if on_ray:
        try:
            from hmer_runtime.serving import ray_serve
        except ImportError as e:
            raise click.ClickException("hmer-serve --ray needs the ray extra: pip install 'hmer[ray]'") from e
        Recognizer(model_dir, ProviderConfig("cpu", 1), variant)  # fail fast on a bad model, before Ray starts
        ray_serve.serve_on_ray(
            ray_serve.ReplicaOptions(str(model_dir) if model_dir else None, provider, variant, threads,
                                     batch_wait_ms, max_batch),
            ray_serve.ScaleOptions(replicas, max_replicas, replica_cpus, replica_gpus),
            Limits(read_timeout_s=read_timeout), host, port, address)
        return
    Recognizer(model_dir, ProviderConfig(provider, threads), variant)  # fail fast on a bad model
    os.environ.update({"HMER_SERVE_MODEL": str(model_dir or ""), "HMER_SERVE_PROVIDER": provider,
                       "HMER_SERVE_VARIANT": variant, "HMER_SERVE_THREADS": str(threads),
                       "HMER_SERVE_WAIT_MS": str(batch_wait_ms), "HMER_SERVE_MAX_BATCH": str(max_batch),
                       "HMER_SERVE_READ_TIMEOUT": str(read_timeout)})
    uvicorn.run("hmer_runtime.serving.serve:app_from_env", host=host, port=port, workers=workers, factory=True,
                http=TimedH11Protocol, timeout_keep_alive=max(1, round(read_timeout)),
                log_level="info" if debug else "warning")


def app_from_env():
    """uvicorn factory for worker processes: settings travel in HMER_SERVE_* variables."""
    env = os.environ
    return create_app(env.get("HMER_SERVE_MODEL") or None, env.get("HMER_SERVE_PROVIDER", "auto"),
                      env.get("HMER_SERVE_VARIANT", "fp32"), int(env.get("HMER_SERVE_THREADS", "0")),
                      float(env.get("HMER_SERVE_WAIT_MS", "5")), int(env.get("HMER_SERVE_MAX_BATCH", "16")),
                      Limits(read_timeout_s=float(env.get("HMER_SERVE_READ_TIMEOUT", Limits.read_timeout_s))))


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
