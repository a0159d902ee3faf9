"""What Ray costs on one machine: ``hmer-batch`` (Ray Data) against plain ``hmer-run`` on the same inputs.

    python -m benchmarks.ray_overhead --data ../shared/data/crohme/crohme-2014.tar.gz --limit 200

Each figure is one whole process (model load, a fresh local Ray instance for hmer-batch, reading,
decoding, writing rows), at the model's default beam unless ``--beam``. Both use all the
machine's CPUs: hmer-run with ``--threads``; hmer-batch as one worker with that many threads, and
as one single-threaded worker per CPU. Rows are compared: the tokens must be the same.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from hmer_bench.run_wall import input_files
from hmer_runtime.cli_util import CONTEXT_SETTINGS, run_cli


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).parent / name)


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode not in (0, 1):
        raise click.ClickException(f"{cmd[0]} failed: {p.stderr[-1500:]}")
    return time.perf_counter() - t0


def _tokens(path: Path) -> dict[str, list]:
    return {r["file"]: r.get("tokens") for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--data", type=click.Path(exists=True), help="CROHME archive or folder (default: the bench set).")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(min=1))
@click.option("--beam", type=click.IntRange(min=1), help="Beam width (default: the model's).")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--cpus", default=os.cpu_count() or 1, show_default=True, type=click.IntRange(min=1))
@click.option("--model", "model_dir", type=click.Path(file_okay=False), help="Model directory (default: bundled).")
def main(data, limit, beam, batch_size, cpus, model_dir) -> None:
    """Time hmer-run and hmer-batch over the same inputs; check they read them alike."""
    common = [*(["--model", model_dir] if model_dir else []), *(["--beam", str(beam)] if beam else []),
              "--batch-size", str(batch_size), "--provider", "cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        files = [str(f) for f in input_files(data, limit, tmp_path)]
        plain_out = tmp_path / "plain.jsonl"
        runs: dict[str, float] = {}
        t = time.perf_counter()
        with open(plain_out, "w", encoding="utf-8") as out:
            p = subprocess.run([_exe("hmer-run"), "--json", "--threads", str(cpus), *common, *files], stdout=out,
                               stderr=subprocess.PIPE, text=True)
        if p.returncode not in (0, 1):
            raise click.ClickException(f"hmer-run failed: {p.stderr[-1500:]}")
        runs[f"hmer-run --threads {cpus}"] = time.perf_counter() - t
        want = _tokens(plain_out)
        for label, flags in ((f"hmer-batch, 1 worker x {cpus} threads",
                              ["--workers", "1", "--worker-cpus", str(cpus), "--threads", str(cpus)]),
                             (f"hmer-batch, {cpus} workers x 1 thread",
                              ["--workers", str(cpus), "--worker-cpus", "1", "--threads", "1"])):
            out = tmp_path / f"batch-{len(runs)}.jsonl"
            runs[label] = _timed([_exe("hmer-batch"), "--no-progress", "-o", str(out), *flags, *common, *files])
            same = _tokens(out) == want
            click.echo(f"{label}: rows {'identical to' if same else 'DIFFER from'} hmer-run's", err=True)
        base = runs[f"hmer-run --threads {cpus}"]
        click.echo(f"{len(files)} inputs ({data or 'the bundled benchmark set'}), beam {beam or 'model default'}, "
                   f"batch {batch_size}, whole-process wall time\n")
        click.echo("| command | s | expressions/s | vs hmer-run |\n|---|---|---|---|")
        for label, seconds in runs.items():
            click.echo(f"| {label} | {seconds:.1f} | {len(files) / seconds:.2f} | {seconds / base:.2f}x |")


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
