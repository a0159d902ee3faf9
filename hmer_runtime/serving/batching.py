"""Requests that arrive within a few milliseconds are decoded as one batch.

:class:`MicroBatcher` does it for ``hmer-serve``; the Ray Serve deployment (``ray_serve``) gets
the same from ``@serve.batch``. Both decode a gathered batch with :func:`decode_grouped`, and
both are a :class:`Backend` to the HTTP app. Nothing here knows of HTTP, only of a
:class:`~hmer_runtime.recognizer.Recognizer`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.recognizer import Recognizer, Result


class Backend(Protocol):
    """What the HTTP app decodes through: a Recognizer, and a way to submit one input (its model
    input at each scale, from ``Recognizer.load_views``)."""

    rec: Recognizer

    async def submit(self, views: list[np.ndarray], options: DecodeOptions, attention: bool) -> Result: ...

    def stats(self) -> dict:
        """Batching settings and counts, shown by ``GET /v1/model``."""
        ...


def decode_grouped(rec: Recognizer, requests: Sequence[tuple[list[np.ndarray], DecodeOptions, bool]]) -> list[Result]:
    """Decode (views, options, attention) requests in one batch per distinct (options, attention),
    results in request order; a batch that fails gives each of its requests a result carrying its
    error."""
    groups: dict[tuple[DecodeOptions, bool], list[int]] = {}
    for i, (_, options, attention) in enumerate(requests):
        groups.setdefault((options, attention), []).append(i)
    out: list[Result] = [None] * len(requests)  # type: ignore[list-item]
    for (options, attention), idx in groups.items():
        try:
            results = rec.decode_images([requests[i][0] for i in idx], options, attention=attention)
        except Exception as e:  # noqa: BLE001 - a failed batch fails its requests, not the server
            results = [Result.failed(e) for _ in idx]
        for i, r in zip(idx, results):
            out[i] = r
    return out


def batch_count(requests: Sequence[tuple[list[np.ndarray], DecodeOptions, bool]]) -> int:
    """How many batches :func:`decode_grouped` decodes ``requests`` in."""
    return len({(options, attention) for _, options, attention in requests})


@dataclass
class _Job:
    views: list[np.ndarray]
    options: DecodeOptions
    attention: bool
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Gathers requests for up to ``wait_ms`` (at most ``max_batch``) and decodes each group of
    equal (options, attention) as one batch in a worker thread; one batch runs at a time."""

    def __init__(self, recognizer: Recognizer, wait_ms: float = 5.0, max_batch: int = 16):
        self.rec, self.wait, self.max_batch = recognizer, wait_ms / 1000, max_batch
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.decoded = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()

    def stats(self) -> dict:
        return {"wait_ms": self.wait * 1000, "max_batch": self.max_batch, "batches": self.batches,
                "decoded": self.decoded}

    async def submit(self, views: list[np.ndarray], options: DecodeOptions, attention: bool) -> Result:
        job = _Job(views, options, attention, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            deadline = loop.time() + self.wait
            while len(jobs) < self.max_batch and self.wait > 0:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            live = [j for j in jobs if not j.future.cancelled()]
            if not live:
                continue
            requests = [(j.views, j.options, j.attention) for j in live]
            outcomes = await loop.run_in_executor(None, decode_grouped, self.rec, requests)
            self.batches += batch_count(requests)
            self.decoded += len(live)
            for j, r in zip(live, outcomes):
                if j.future.done():
                    continue
                if r.error is not None:
                    j.future.set_exception(r.error)
                else:
                    j.future.set_result(r)
