"""Reading a ``POST /v1/recognize`` request: its body within the limits, the input it carries and
the options it asks for.

Every problem is a :class:`RequestError` (or the recogniser's own :class:`HmerError`) that
carries its HTTP status, so a service answers ``{"error": str(e)}`` with ``e.status`` and nothing
here knows about responses. hmer-serve and its Ray Serve replicas read requests with this one module.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from hmer_runtime.errors import TOO_LARGE, HmerError
from hmer_runtime.inputs.preprocess import load_image
from hmer_runtime.inputs.render import ink_length
from hmer_runtime.inputs.strokes import MAX_POINTS, MAX_STROKES, strict_json, strokes_to_ink
from hmer_runtime.recognizer import Recognizer
from hmer_runtime.serving.admission import Admission

TIMED_OUT, INVALID_OPTION = 408, 422


@dataclass
class Limits:
    """What one request may ask for; over a limit is a 413/422 naming the limit."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 16_000_000
    max_strokes: int = MAX_STROKES
    max_points: int = MAX_POINTS
    max_beam: int = 16
    timeout_s: float = 30.0  # from a request's arrival to its answer
    read_timeout_s: float = 10.0  # to receive a request's headers, and then its body
    max_in_flight: int = 32  # requests held at once (bodies read, preprocessed or decoded); more: 503
    preprocess_threads: int = 2  # the ordinary preprocessing lane
    heavy_ink_length: float = 200_000  # ink drawn longer (supersampled px) is prepared in the heavy lane
    heavy_pixels: int = 4_000_000  # and so are larger images
    max_heavy: int = 2  # heavy inputs queued or being prepared at once; more: 503


class RequestError(HmerError):
    """A request the service cannot take, with the status it is answered with."""


@dataclass(frozen=True)
class RecognizeRequest:
    """What a request asks: its model input at each of the model's scales, the beam width, and
    whether to return attention; ``heavy`` when it costs more than an ordinary one (an expensive
    input, or a beam wider than the model's own), so that it is prepared and decoded apart from
    the ordinary ones."""

    views: list[np.ndarray]
    beam: int
    attention: bool
    heavy: bool = False
    n_best: int = 1  # readings to return: the best and n_best - 1 alternatives


async def read_request(request, rec: Recognizer, limits: Limits, admission: Admission,
                       deadline: float) -> RecognizeRequest:
    """The input and options of a Starlette ``request``: an image (multipart field ``file``, or the
    raw body) or JSON ``{"strokes": [[[x, y], ...], ...], "beam": 5, "attention": false}``.
    Decoding the image or drawing the ink runs in ``admission``'s lanes, off the event loop, until
    ``deadline`` (time.monotonic)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise RequestError("request", f"body of {declared} bytes is over the limit of {limits.max_body_bytes}",
                           TOO_LARGE)
    try:
        body = await asyncio.wait_for(read_body(request, limits.max_body_bytes), limits.read_timeout_s)
    except TimeoutError:
        raise RequestError("request", f"body not received within {limits.read_timeout_s} s", TIMED_OUT) from None
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        payload = _json_object(body)
        beam, attention, n_best = parse_options(request.query_params, payload, rec.options.beam, limits.max_beam)
        ink = strokes_to_ink(payload, "strokes", limits.max_strokes, limits.max_points)
        heavy = admission.is_heavy(ink_length=ink_length(ink, rec.spec.render))
        views = await admission.preprocess(lambda: rec.load_views(ink), heavy, deadline)
        return RecognizeRequest(views, beam, attention, heavy or beam > rec.options.beam, n_best)
    if ctype == "multipart/form-data":
        from starlette.exceptions import HTTPException

        try:
            form = await request.form()
        except HTTPException as e:  # python-multipart's parse errors
            raise RequestError("request", f"malformed multipart body: {e.detail}") from e
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise RequestError("request", "multipart request without a 'file' field")
        data, name = await upload.read(), upload.filename or "upload"
        fields = {k: v for k, v in form.items() if k != "file"}
    else:
        data, name, fields = body, "body", {}
    beam, attention, n_best = parse_options(request.query_params, fields, rec.options.beam, limits.max_beam)
    if not data:
        raise RequestError("request", "empty request body: send an image or JSON strokes")
    heavy = admission.is_heavy(pixels=declared_pixels(data))
    views = await admission.preprocess(lambda: rec.load_views(load_image(data, name, limits.max_pixels), name),
                                       heavy, deadline)
    return RecognizeRequest(views, beam, attention, heavy or beam > rec.options.beam, n_best)


def declared_pixels(data: bytes) -> int:
    """The pixels an image's header declares (nothing is decoded); 0 when it has no readable header,
    which ``load_image`` then reports."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.width * im.height
    except Exception:  # noqa: BLE001 - any unreadable header: load_image names the problem
        return 0


async def read_body(request, limit: int) -> bytes:
    """The request body, read as it streams in (chunked uploads included) and refused as soon as
    it passes ``limit`` bytes, so an endless body is never buffered."""
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise RequestError("request", f"body is over the limit of {limit} bytes", TOO_LARGE)
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # Starlette's request.form() parses a body already read from here
    return body


def _json_object(body: bytes) -> dict:
    try:
        payload = strict_json(body)
    except ValueError as e:  # also: Infinity, NaN, integers past Python's 4300 digits, deep nesting
        raise RequestError("request", f"malformed JSON: {e}") from e
    if not isinstance(payload, dict):
        raise RequestError("request", "JSON body must be an object with 'strokes'")
    return payload


def parse_options(params, fields: dict, default_beam: int, max_beam: int) -> tuple[int, bool, int]:
    """(beam, attention, n_best) from the query string and the body's fields (the body wins); the
    beam defaults to the model's ``decode.beam``, ``n_best`` (readings returned, the best and
    its alternatives) to 1 and at most the beam."""
    src = {**dict(params), **fields}
    beam = _integer(src, "beam", default_beam, max_beam)
    n_best = _integer(src, "n_best", 1, beam)
    attention = str(src.get("attention", "false")).lower() in ("1", "true", "yes")
    return beam, attention, n_best


def _integer(src: dict, name: str, default: int, high: int) -> int:
    value = src.get(name, default)
    try:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise RequestError(name, f"must be an integer, got {shown}", INVALID_OPTION) from None
    if not 1 <= number <= high:
        raise RequestError(name, f"must be between 1 and {high}", INVALID_OPTION)
    return number


