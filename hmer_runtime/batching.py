"""``MicroBatcher``: requests that arrive within a few milliseconds are decoded as one batch.

Used by ``hmer-serve``; it knows nothing of HTTP, only of a :class:`~hmer_runtime.recognizer.Recognizer`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from hmer_runtime.recognizer import Recognizer, Result


@dataclass
class _Job:
    image: np.ndarray
    beam: int
    attention: bool
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Gathers requests for up to ``wait_ms`` (at most ``max_batch``) and decodes each group of
    equal (beam, attention) as one batch in a worker thread; one batch runs at a time."""

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

    async def submit(self, image: np.ndarray, beam: int, attention: bool) -> Result:
        job = _Job(image, beam, attention, asyncio.get_running_loop().create_future())
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
                except asyncio.TimeoutError:
                    break
            groups: dict[tuple[int, bool], list[_Job]] = {}
            for j in jobs:
                if not j.future.cancelled():
                    groups.setdefault((j.beam, j.attention), []).append(j)
            for (beam, attention), group in groups.items():
                try:
                    results = await loop.run_in_executor(
                        None, lambda g=group, b=beam, a=attention: self.rec.decode_images([j.image for j in g], b, a))
                except Exception as e:  # noqa: BLE001 - a failed batch fails its requests, not the server
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(e)
                    continue
                self.batches += 1
                self.decoded += len(group)
                for j, r in zip(group, results):
                    if not j.future.done():
                        j.future.set_result(r)
