"""The bad requests every recognition service must answer with a 4xx JSON error: hmer-serve and
its Ray Serve deployment are checked against the same list."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from hmer_runtime.serving.requests import Limits


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def bad_requests(limits: Limits, good_png: bytes, strokes: list) -> list[tuple[dict, int, str]]:
    """(request kwargs for an httpx-style ``post``, expected status, text the error must contain)."""
    side = int(limits.max_pixels ** 0.5) + 10
    over_pixels = png(np.full((side, side), 255, dtype=np.uint8))
    n_strokes, n_points = limits.max_strokes + 1, limits.max_points + 1
    image = {"Content-Type": "image/png"}
    json_type = {"Content-Type": "application/json"}
    return [
        (dict(content=b"{not json", headers={"Content-Type": "application/json"}), 400, "malformed JSON"),
        (dict(json=[1, 2]), 400, "object"),
        (dict(json={"beam": 1}), 400, "strokes"),
        (dict(json={"strokes": [[1, 2, 3]]}), 400, "stroke 0"),
        (dict(json={"strokes": [[[0, 0]]] * n_strokes}), 413, f"{n_strokes} strokes"),
        (dict(json={"strokes": [[[i, i] for i in range(n_points)]]}), 413, f"{n_points} points"),
        (dict(json={"strokes": strokes, "beam": 0}), 422, "beam"),
        (dict(json={"strokes": strokes, "beam": "wide"}), 422, "beam"),
        (dict(json={"strokes": strokes, "beam": 2.5}), 422, "beam"),
        (dict(json={"strokes": strokes, "beam": 10**30}), 422, "beam"),
        (dict(content=b'{"strokes": [[[0, 0], [1, 1]]], "beam": Infinity}', headers=json_type), 400, "Infinity"),
        (dict(content=b'{"strokes": [[[NaN, 0], [1, 1]]]}', headers=json_type), 400, "NaN"),
        (dict(content=b'{"strokes": [[[0, 0], [1, 1]]], "beam": ' + b"9" * 5000 + b"}", headers=json_type), 400,
         "malformed JSON"),
        (dict(content=b'{"strokes": [[[1' + b"0" * 5000 + b', 0], [1, 1]]]}', headers=json_type), 400,
         "malformed JSON"),
        (dict(content=b"", headers=image), 400, "empty request body"),
        (dict(content=b"GIF89a-but-not-really", headers=image), 400, "not a readable image"),
        (dict(content=good_png[:70], headers=image), 400, "image"),
        (dict(content=png(np.full((40, 60), 255, dtype=np.uint8)), headers=image), 422, "no ink"),
        (dict(content=over_pixels, headers=image), 413, "limit"),
        (dict(content=b"x" * (limits.max_body_bytes + 1), headers=image), 413, "over the limit"),
        (dict(files={"other": ("a.txt", b"x", "text/plain")}), 400, "'file'"),
    ]


def check_bad_requests(post, limits: Limits, good_png: bytes, strokes: list) -> None:
    """Every bad request gets its status and a JSON ``error`` naming the problem."""
    for kwargs, status, message in bad_requests(limits, good_png, strokes):
        r = post("/v1/recognize", **kwargs)
        assert r.status_code == status, (kwargs.get("json"), r.text[:300])
        assert message in r.json()["error"], (message, r.json())
