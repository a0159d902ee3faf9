"""Bounded load test of ``hmer-serve`` on 127.0.0.1, with and without micro-batching, and with
hostile clients beside the normal ones.

    python -m benchmarks.serve_load [--model DIR] [--requests 2000] [--concurrency 16] [--wait-ms 0,5]
    python -m benchmarks.serve_load --requests 400 --concurrency 4 --wait-ms 5 --hostile 4

Starts a server per setting, sends the requests (ink strokes of the bundled examples, cycled) from
``concurrency`` clients, checks that every request succeeded, and prints latency percentiles and
throughput. With ``--hostile N``, N more clients send, for as long as the normal ones run, the
inputs that cost a server most within its limits: ink drawn nearly as long as the render allows
(a zig-zag of few points across the whole canvas, asking for the widest beam), and 16-megapixel
PNGs under the body limit; their answers are counted by status (503: the server asks them to
wait), and the server's peak resident memory is read from /proc. Stops by itself; talks to
nothing but 127.0.0.1.
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


def hostile_requests() -> list[dict]:
    """Request arguments (for httpx ``post``) of the inputs that cost a server most within its limits."""
    import io

    from PIL import Image

    # 50 short strokes set the symbol size; the zig-zag then spans the canvas ~2 800 times: about
    # 3.6 M supersampled pixels drawn, under the 4 M that render_ink allows
    small = [[[x, 0.0], [x + 25.0, 25.0]] for x in range(0, 1000, 20)]
    zig = [[0.0 if i % 2 == 0 else 1000.0, 250.0 * ((i // 2) % 2)] for i in range(1_280)]
    ink = {"json": {"strokes": small + [zig], "beam": 16}}
    page = np.full((4000, 4000), 255, dtype=np.uint8)
    page[:1200] = np.random.default_rng(0).integers(0, 255, (1200, 4000), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(page).save(buf, format="PNG")  # 16 MP, under the 8 MB body limit
    picture = {"content": buf.getvalue(), "headers": {"content-type": "image/png"}}
    return [ink, picture]


async def _load(url: str, bodies: list[dict], n: int, concurrency: int,
                hostile: int = 0) -> tuple[list[float], int, dict[int, int]]:
    latencies: list[float] = []
    failures = 0
    statuses: dict[int, int] = {}
    counter = iter(range(n))
    remaining = [concurrency]
    attacks = hostile_requests() if hostile else []
    async with httpx.AsyncClient(timeout=120) as client:
        async def worker():
            nonlocal failures
            for i in counter:
                t0 = time.perf_counter()
                r = await client.post(f"{url}/v1/recognize", json=bodies[i % len(bodies)])
                latencies.append((time.perf_counter() - t0) * 1000)
                failures += r.status_code != 200
            remaining[0] -= 1

        async def attacker(k: int):
            while remaining[0] > 0:
                r = await client.post(f"{url}/v1/recognize", **attacks[k % len(attacks)])
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 503:
                    await asyncio.sleep(0.05)  # a client that is told to wait, waits a little

        await asyncio.gather(*(worker() for _ in range(concurrency)), *(attacker(k) for k in range(hostile)))
    return latencies, failures, statuses


def peak_rss_mib(pid: int) -> float:
    """The peak resident memory of process ``pid`` (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_setting(model: str | None, wait_ms: float, n: int, concurrency: int, threads: int, hostile: int = 0) -> dict:
    args = ["--provider", "cpu", "--batch-wait-ms", str(wait_ms), "--threads", str(threads)]
    proc, url = launch(args + (["--model", model] if model else []))
    try:
        bodies = [{"strokes": json.loads(p.read_text())["strokes"]} for p in sorted(STROKES.glob("*.json"))]
        asyncio.run(_load(url, bodies, 2 * concurrency, concurrency))  # warm-up
        rss_before = peak_rss_mib(proc.pid)
        t0 = time.perf_counter()
        lat, failures, statuses = asyncio.run(_load(url, bodies, n, concurrency, hostile))
        wall = time.perf_counter() - t0
        info = httpx.get(f"{url}/v1/model").json()["batching"]
        rss = peak_rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    a = np.array(lat)
    return {"wait_ms": wait_ms, "requests": len(a), "failed": failures, "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "req_per_s": len(a) / wall,
            "mean_batch": info["decoded"] / max(1, info["batches"]), "hostile": hostile,
            "hostile_statuses": statuses, "peak_rss_mib": rss, "peak_rss_warm_mib": rss_before}


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--model", type=click.Path(file_okay=False))
@click.option("--requests", "n", default=2000, show_default=True)
@click.option("--concurrency", default=16, show_default=True)
@click.option("--wait-ms", default="0,5", show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--hostile", default=0, show_default=True, help="Clients sending the costliest inputs meanwhile.")
def main(model, n, concurrency, wait_ms, threads, hostile) -> None:
    rows = [run_setting(model, float(w), n, concurrency, threads, hostile) for w in wait_ms.split(",")]
    click.echo("| batching window | hostile clients | requests | failed | p50 ms | p99 ms | requests/s | mean batch "
               "| hostile answers | peak RSS MiB (after warm-up) |")
    click.echo("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(r["hostile_statuses"].items())) or "-"
        click.echo(f"| {r['wait_ms']:g} ms | {r['hostile']} | {r['requests']} | {r['failed']} | {r['p50_ms']:.0f} | "
                   f"{r['p99_ms']:.0f} | {r['req_per_s']:.1f} | {r['mean_batch']:.1f} | {answers} | "
                   f"{r['peak_rss_mib']:.0f} ({r['peak_rss_warm_mib']:.0f}) |")
    if any(r["failed"] or r["requests"] != n for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
