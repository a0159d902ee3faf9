"""Bounded load test of ``hmer-serve`` on 127.0.0.1, with and without micro-batching.

    python -m benchmarks.serve_load [--model DIR] [--requests 2000] [--concurrency 16] [--wait-ms 0,5]

Starts a server per setting, sends the requests (ink strokes of the bundled examples, cycled) from
``concurrency`` clients, checks that every request succeeded, and prints latency percentiles and
throughput. Stops by itself; talks to nothing but 127.0.0.1.
"""

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import click
import httpx
import numpy as np

from hmer_runtime.cli_util import CONTEXT_SETTINGS

STROKES = Path(__file__).resolve().parents[1] / "examples" / "strokes"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], timeout_s: float = 30.0, port: int | None = None):
    """Start ``hmer-serve ARGS`` on 127.0.0.1:``port`` (default: a free one) and wait until
    /healthz answers (for tests and load tests). Returns the process and its base URL;
    RuntimeError with the server's output if it does not come up."""
    port = port or free_port()
    cmd = [str(Path(sys.executable).parent / "hmer-serve"), "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"hmer-serve did not start: {proc.stdout.read().decode()[-2000:]}")


async def _load(url: str, bodies: list[dict], n: int, concurrency: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    failures = 0
    counter = iter(range(n))
    async with httpx.AsyncClient(timeout=60) as client:
        async def worker():
            nonlocal failures
            for i in counter:
                t0 = time.perf_counter()
                r = await client.post(f"{url}/v1/recognize", json=bodies[i % len(bodies)])
                latencies.append((time.perf_counter() - t0) * 1000)
                failures += r.status_code != 200
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, failures


def run_setting(model: str | None, wait_ms: float, n: int, concurrency: int, threads: int) -> dict:

    args = ["--provider", "cpu", "--batch-wait-ms", str(wait_ms), "--threads", str(threads)]
    proc, url = launch(args + (["--model", model] if model else []))
    try:
        bodies = [{"strokes": json.loads(p.read_text())["strokes"]} for p in sorted(STROKES.glob("*.json"))]
        asyncio.run(_load(url, bodies, 2 * concurrency, concurrency))  # warm-up
        t0 = time.perf_counter()
        lat, failures = asyncio.run(_load(url, bodies, n, concurrency))
        wall = time.perf_counter() - t0
        info = httpx.get(f"{url}/v1/model").json()["batching"]
    finally:
        proc.terminate()
        proc.wait(10)
    a = np.array(lat)
    return {"wait_ms": wait_ms, "requests": len(a), "failed": failures, "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "req_per_s": len(a) / wall,
            "mean_batch": info["decoded"] / max(1, info["batches"])}


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--model", type=click.Path(file_okay=False))
@click.option("--requests", "n", default=2000, show_default=True)
@click.option("--concurrency", default=16, show_default=True)
@click.option("--wait-ms", default="0,5", show_default=True)
@click.option("--threads", default=2, show_default=True)
def main(model, n, concurrency, wait_ms, threads) -> None:
    rows = [run_setting(model, float(w), n, concurrency, threads) for w in wait_ms.split(",")]
    click.echo("| batching window | requests | failed | p50 ms | p99 ms | requests/s | mean batch |")
    click.echo("|---|---|---|---|---|---|---|")
    for r in rows:
        click.echo(f"| {r['wait_ms']:g} ms | {r['requests']} | {r['failed']} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                   f"{r['req_per_s']:.1f} | {r['mean_batch']:.1f} |")
    if any(r["failed"] or r["requests"] != n for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
