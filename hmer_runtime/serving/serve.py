"""``hmer-serve``: an HTTP API and a drawing-pad page on top of :class:`Recognizer` (extra ``serve``).

    POST /v1/recognize   image (multipart ``file`` or raw bytes) or JSON ink {"strokes": [[[x, y], ...], ...]}
    GET  /v1/model       what is loaded;  GET /healthz;  GET /  the drawing pad (+ /hmer.js, /pad.css);  GET /docs

Concurrent requests are gathered for up to ``batch_wait_ms`` and decoded as one batch (one
encoder call, one decoder call per step for all of them); ``batch_wait_ms=0`` decodes each alone.
"""

# No ``from __future__ import annotations`` here: FastAPI resolves the endpoint annotations
# (``Request``, imported inside create_app so the runtime does not need fastapi) at definition time.
import asyncio
import functools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hmer_runtime.engine.providers import ProviderConfig
from hmer_runtime.errors import HmerError
from hmer_runtime.recognizer import Recognizer
from hmer_runtime.serving.admission import Admission
from hmer_runtime.serving.batching import Backend, MicroBatcher
from hmer_runtime.serving.requests import Limits, read_request

STATIC = Path(__file__).parents[1] / "static"
PAGE = STATIC / "index.html"  # the drawing pad; it loads hmer.js (its Pad) and pad.css from beside it


@dataclass(frozen=True)
class ServeOptions:
    """What each worker (or Ray Serve replica) loads and how it batches, as hmer-serve's flags of
    the same names say."""

    model_dir: str | None = None
    provider: str = "auto"
    variant: str = "fp32"
    threads: int = 0  # ONNX Runtime threads; 0: its choice (a Ray replica: its CPUs)
    batch_wait_ms: float = 5.0
    max_batch: int = 16


try:
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError:  # the serve extra is not installed: hmer-serve says so in main()
    H11Protocol = object


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers are not all in within
    the read timeout (``Limits.read_timeout_s``) of connecting or of the previous response (slowloris
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

        self.loop.call_later(settings_from_env()[1].read_timeout_s, expire)


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


def create_app(options: ServeOptions = ServeOptions(), limits: Limits | None = None, backend: Backend | None = None):
    """The FastAPI application. By default a Recognizer behind a :class:`MicroBatcher` is loaded at
    startup (one per worker process) as ``options`` say; ``backend`` is one built already (the Ray
    Serve replica, which batches with ``@serve.batch``), and then ``options`` are unused. Requests
    are read by :mod:`hmer_runtime.serving.requests`."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException

    limits = limits or Limits()
    state: dict = {}
    admission = Admission(limits)

    @asynccontextmanager
    async def lifespan(app):
        try:
            if backend is not None:
                state["rec"], state["batcher"] = backend.rec, backend
                yield
                return
            rec = Recognizer(options.model_dir, ProviderConfig(options.provider, options.threads), options.variant)
            state["rec"] = rec
            state["batcher"] = MicroBatcher(rec, options.batch_wait_ms, options.max_batch)
            # heavy requests decode in batches of their own, so a long one never holds up ordinary ones
            state["heavy_batcher"] = MicroBatcher(rec, options.batch_wait_ms, limits.max_heavy)
            state["batcher"].start()
            state["heavy_batcher"].start()
            yield
            await state["batcher"].stop()
            await state["heavy_batcher"].stop()
        finally:
            admission.close()

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

    @app.exception_handler(HmerError)
    async def bad_input(request, exc: HmerError) -> JSONResponse:  # its own status: 413, 422, else 400
        return error(exc.status, str(exc))

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
                "checkpoint": spec.checkpoint, "license": spec.license,
                "batching": state["batcher"].stats(), "admission": admission.stats(),
                **({"heavy_batching": state["heavy_batcher"].stats()} if "heavy_batcher" in state else {})}

    @app.post("/v1/recognize")
    async def recognize(request: Request):
        """Recognise one expression: an image (multipart field ``file``, or the raw body) or JSON
        ``{"strokes": [[[x, y], ...], ...], "beam": 5, "n_best": 3, "attention": false}`` (beam: default
        the model's; n_best: the best reading and its alternatives, at most the beam)."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + limits.timeout_s  # one deadline for reading, preparing and decoding
        with admission.request():
            asked = await read_request(request, state["rec"], limits, admission, deadline)
            try:
                batcher = state.get("heavy_batcher", state["batcher"]) if asked.heavy else state["batcher"]
                options = state["rec"].resolve(beam=asked.beam).with_overrides(n_best=asked.n_best)
                result = await asyncio.wait_for(batcher.submit(asked.views, options, asked.attention),
                                                max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return error(503, f"recognition took longer than {limits.timeout_s:g} s; try again")
        out = {**result.to_dict(asked.n_best), "mathml": to_mathml(result.latex),
               "ms": (time.perf_counter() - t0) * 1000}
        if asked.attention and result.attention is not None:
            out["attention"] = [np.round(a, 4).tolist() for a in result.attention]
        return out

    return app


# uvicorn's worker processes build their app from this variable, which hmer-serve sets (cli_serve)
SETTINGS_ENV = "HMER_SERVE_SETTINGS"


@functools.cache
def settings_from_env() -> tuple[ServeOptions, Limits]:
    """The options and limits ``hmer-serve`` passed its worker processes (defaults without); read
    once per process (the connection timer asks on every request)."""
    raw = json.loads(os.environ.get(SETTINGS_ENV) or "{}")
    return ServeOptions(**raw.get("options", {})), Limits(**raw.get("limits", {}))


def app_from_env():
    """uvicorn factory for worker processes."""
    return create_app(*settings_from_env())


