"""Whole-process wall time of ``hmer-run`` as a new user runs it, by beam width and batch size.

    python -m benchmarks.run_wall --data ../shared/data/crohme/crohme-2014.tar.gz --limit 200

Each cell is one ``hmer-run --json`` process over the same files (model load, preprocessing,
decoding and output included). A CROHME archive is unpacked into a temporary folder first, so
the process reads plain InkML files; without ``--data`` the bundled benchmark set is used.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import click

from hmer_bench.latency import BENCH_SET, _ints
from hmer_runtime.cli_util import CONTEXT_SETTINGS, run_cli


def input_files(data: str | None, limit: int, folder: Path) -> list[Path]:
    """The first ``limit`` inputs of ``data`` (a .tar.gz of InkML, a folder, or the bench set) as files."""
    if data is None:
        return sorted(BENCH_SET.glob("*.png"))[:limit]
    src = Path(data)
    if src.is_dir():
        return sorted(p for p in src.rglob("*") if p.suffix.lower() in (".inkml", ".png", ".jpg"))[:limit]
    out = []
    with tarfile.open(src) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".inkml"):
                path = folder / f"{len(out):04d}.inkml"
                path.write_bytes(tar.extractfile(member).read())
                out.append(path)
                if len(out) == limit:
                    break
    return out


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--data", type=click.Path(exists=True), help="CROHME archive or folder (default: the bench set).")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(min=1))
@click.option("--beam", "beams", default="1,5,10", show_default=True)
@click.option("--batch", "batches", default="1,8", show_default=True)
@click.option("--threads", default=2, show_default=True, type=click.IntRange(min=0))
@click.option("--model", "model_dir", type=click.Path(file_okay=False), help="Model directory (default: bundled).")
def main(data, limit, beams, batches, threads, model_dir) -> None:
    """Time hmer-run over the same inputs for each beam width and batch size."""
    exe = shutil.which("hmer-run") or str(Path(sys.executable).parent / "hmer-run")
    with tempfile.TemporaryDirectory() as tmp:
        files = [str(f) for f in input_files(data, limit, Path(tmp))]
        click.echo(f"{len(files)} inputs ({data or 'the bundled benchmark set'}), {threads} threads, "
                   f"hmer-run --json, whole-process wall time in seconds\n")
        beam_list = _ints(beams)
        click.echo("| batch | " + " | ".join(f"beam {b}" for b in beam_list) + " |")
        click.echo("|---|" + "---|" * len(beam_list))
        for batch in _ints(batches):
            cells = []
            for beam in beam_list:
                cmd = [exe, "--json", "--beam", str(beam), "--batch-size", str(batch), "--threads", str(threads)]
                cmd += ["--model", model_dir] if model_dir else []
                t0 = time.perf_counter()
                done = subprocess.run(cmd + ["-"], input="\n".join(files), capture_output=True, text=True)
                wall = time.perf_counter() - t0
                rows = done.stdout.count("\n")
                cells.append(f"{wall:.1f}" + ("" if rows == len(files) else f" ({rows} rows)"))
            click.echo(f"| {batch} | " + " | ".join(cells) + " |")


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
