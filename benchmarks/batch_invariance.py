"""Whether a reading depends on its batch mates: ``hmer-run --json`` at two batch sizes, same inputs.

    python -m benchmarks.batch_invariance --data ../shared/data/crohme/crohme-2014.tar.gz --limit 200

Counts the inputs whose tokens differ between the two runs (0 is right: an image reads the same
whatever else is in its batch), and the ExpRate of each run where the inputs carry a truth.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import click

from hmer_bench.run_wall import input_files
from hmer_runtime.cli_util import CONTEXT_SETTINGS, run_cli
from hmer_runtime.inputs.inkml import read_inkml
from hmer_runtime.text.latex import tokenize


def _rows(exe: str, files: list[str], batch: int, extra: list[str]) -> dict[str, list | None]:
    p = subprocess.run([exe, "--json", "--batch-size", str(batch), *extra, *files], capture_output=True, text=True)
    return {r["file"]: r.get("tokens") for r in map(json.loads, p.stdout.splitlines())}


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--data", type=click.Path(exists=True), help="CROHME archive or folder (default: the bench set).")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(min=1))
@click.option("--batch", "batches", default="1,8", show_default=True, help="The two batch sizes.")
@click.option("--beam", type=click.IntRange(min=1), help="Beam width (default: the model's).")
@click.option("--model", "model_dir", type=click.Path(file_okay=False), help="Model directory (default: bundled).")
def main(data, limit, batches, beam, model_dir) -> None:
    """Read the same inputs at two batch sizes and count the readings that differ."""
    import shutil
    import sys

    exe = shutil.which("hmer-run") or str(Path(sys.executable).parent / "hmer-run")
    extra = [*(["--model", model_dir] if model_dir else []), *(["--beam", str(beam)] if beam else []),
             "--provider", "cpu", "--threads", "2"]
    a, b = (int(x) for x in batches.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        files = [str(f) for f in input_files(data, limit, Path(tmp))]
        first, second = _rows(exe, files, a, extra), _rows(exe, files, b, extra)
        truth = {f: tokenize(read_inkml(f).truth or "") for f in files if f.endswith(".inkml")}
    differ = sum(first.get(f) != second.get(f) for f in files)
    click.echo(f"{len(files)} inputs, beam {beam or 'model default'}: batch {a} and batch {b} read "
               f"{differ} of them differently")
    if truth:
        for size, rows in ((a, first), (b, second)):
            right = sum(rows.get(f) == t for f, t in truth.items())
            click.echo(f"batch {size}: ExpRate {100 * right / len(truth):.2f}")


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
