"""What the server holds at once: requests in flight, and preprocessing in two bounded lanes.

Every request counts from its first byte to its answer; past ``Limits.max_in_flight`` a new one
is answered 503 at once, so bodies held in memory are bounded. Decoding an image or drawing ink
runs in a thread pool under the request's deadline. Inputs whose preprocessing is expensive
(ink drawn longer than ``heavy_ink_length``, images over ``heavy_pixels``) go to a lane of their
own with one thread and at most ``max_heavy`` queued, so a few of them never delay the ordinary
inputs beside them, and their memory is bounded too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

from hmer_runtime.errors import HmerError

BUSY = 503


class Busy(HmerError):
    """The server holds as much work as it may; the client should try again."""

    status = BUSY


class Admission:
    """Counts requests in flight and runs preprocessing in its lanes; one per app."""

    def __init__(self, limits):
        self.limits = limits
        self.light = ThreadPoolExecutor(limits.preprocess_threads, thread_name_prefix="hmer-preprocess")
        self.heavy = ThreadPoolExecutor(1, thread_name_prefix="hmer-preprocess-heavy")
        self.in_flight = 0
        self.heavy_queued = 0  # heavy jobs submitted and not yet finished (even if their request gave up)

    @contextlib.contextmanager
    def request(self):
        """Hold one request's place; Busy (503) when ``max_in_flight`` are already held."""
        if self.in_flight >= self.limits.max_in_flight:
            raise Busy("request", f"server busy ({self.in_flight} requests in flight); try again shortly")
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def is_heavy(self, ink_length: float = 0.0, pixels: int = 0) -> bool:
        return ink_length > self.limits.heavy_ink_length or pixels > self.limits.heavy_pixels

    async def preprocess(self, fn, heavy: bool, deadline: float):
        """``fn()`` in its lane, awaited until ``deadline`` (time.monotonic); Busy when the heavy
        lane is full or the deadline passes first (the thread then finishes on its own, still
        counted against the lane)."""
        if heavy and self.heavy_queued >= self.limits.max_heavy:
            raise Busy("request", f"{self.heavy_queued} large inputs are being prepared; try again shortly")
        pool = self.heavy if heavy else self.light
        future = pool.submit(fn)
        if heavy:
            loop = asyncio.get_running_loop()
            self.heavy_queued += 1
            # the count changes on the event loop's thread only, whichever thread finishes the job
            future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._heavy_done))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            future.cancel()  # a job still queued never runs; a running one cannot be stopped
            raise Busy("request", f"preparing the input took longer than {self.limits.timeout_s:g} s") from None

    def _heavy_done(self) -> None:
        self.heavy_queued -= 1

    def stats(self) -> dict:
        return {"in_flight": self.in_flight, "heavy_queued": self.heavy_queued}

    def close(self) -> None:
        self.light.shutdown(wait=False, cancel_futures=True)
        self.heavy.shutdown(wait=False, cancel_futures=True)
