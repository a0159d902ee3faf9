"""``hmer-batch``: recognise a folder, list or glob of inputs on a Ray cluster with Ray Data (extra ``ray``).

    hmer-batch scans/ -o results.jsonl                    # a local Ray instance (or $RAY_ADDRESS)
    hmer-batch --address auto 'exams/**/*.png' -o out.jsonl --workers 16
    hmer-batch @paths.txt -o out.jsonl                    # a list file, one path a line

Inputs are expanded as ``hmer-run`` expands them. Each Ray Data worker holds one torch-free
Recognizer and recognises windows of inputs the way ``hmer-run`` does (sorted by size in batches
of ``--batch-size``); a result never depends on an input's batch mates, so the rows are
``hmer-run``'s. Rows are written as they come back, one JSON line per input in ``hmer-run
--json``'s format; a bad file is a row with an ``error``. A rerun skips the inputs that already
have a row, so a killed job resumes where it stopped.

On a cluster, every node reads the inputs and the model itself: keep them on storage all nodes
mount, at the same path, and install hmer on every node.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from hmer_runtime.cli_run import INPUT_SUFFIXES, WINDOW_BATCHES, expand_inputs, json_row, printable
from hmer_runtime.cli_util import CONTEXT_SETTINGS, PROVIDER_OPTION, run_cli
from hmer_runtime.errors import InputError, input_error
from hmer_runtime.recognizer import Result


@dataclass(frozen=True)
class BatchOptions:
    """What each worker loads and how it decodes."""

    model_dir: str | None = None
    provider: str = "auto"
    variant: str = "fp32"
    beam: int | None = None  # None: the model's decode.beam
    batch_size: int = 8
    threads: int = 0  # ONNX Runtime threads per worker; 0 = the worker's CPUs
    cpus: float = 1.0  # CPUs each worker reserves
    gpus: float = 0.0


@dataclass
class BatchSummary:
    """What a run did: rows written now, rows already there, and error rows among the inputs."""

    written: int = 0
    skipped: int = 0
    errors: int = 0
    seconds: float = 0.0


class RecognizeFiles:
    """A Ray Data worker: one Recognizer, fed batches of ``{"file": [...]}``; returns each input's row."""

    def __init__(self, options: BatchOptions):
        from hmer_runtime.engine.providers import ProviderConfig
        from hmer_runtime.recognizer import Recognizer

        threads = options.threads or max(1, round(options.cpus))
        self.rec = Recognizer(options.model_dir, ProviderConfig(options.provider, threads), options.variant,
                              beam=options.beam)
        self.batch_size = options.batch_size

    def __call__(self, batch: dict) -> dict:
        files = [str(f) for f in batch["file"]]
        try:
            rows = self._rows(files)
        except Exception:  # noqa: BLE001 - a batch that fails as a whole is retried input by input
            rows = [self._one(f) for f in files]
        return {"file": files, "row": [r for r, _ in rows], "failed": [f for _, f in rows]}

    def _rows(self, files: list[str]) -> list[tuple[str, bool]]:
        results = self.rec.recognize_batch(files, batch_size=self.batch_size)
        return [(json_row(f, r), not r.ok) for f, r in zip(files, results)]

    def _one(self, path: str) -> tuple[str, bool]:
        try:
            return self._rows([path])[0]
        except Exception as e:  # noqa: BLE001 - this input's failure is its row, never the job's
            return json_row(path, Result.failed(input_error(path, e))), True


def read_done(output: Path) -> dict[str, bool]:
    """The inputs that already have a row in ``output`` (file name -> whether it is an error row).
    A last line cut short by a killed run is removed, so the rerun writes it again whole. A file
    that is not this command's output (any complete line not a row) is refused untouched."""
    done: dict[str, bool] = {}
    if not output.exists():
        return done
    if not output.is_file():
        raise InputError(str(output), "is not a file")
    data = output.read_bytes()
    good = data.rfind(b"\n") + 1
    for n, line in enumerate(data[:good].splitlines(), 1):
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            row = None
        if not (isinstance(row, dict) and isinstance(row.get("file"), str)):
            raise InputError(str(output), f"is not hmer-batch output (line {n} is not one of its JSON rows), so "
                                          "it is neither resumed nor overwritten; choose another -o file")
        done[row["file"]] = "error" in row
    tail = data[good:]
    if tail and not tail.startswith(b'{"file"'):  # every row starts so (json_row)
        raise InputError(str(output), "is not hmer-batch output (its last line is not one of its JSON rows), "
                                      "so it is neither resumed nor overwritten; choose another -o file")
    if tail:  # a torn tail: keep the file to its last complete row
        with open(output, "r+b") as f:
            f.truncate(good)
    return done


def run_batch(paths: list[str], output: str | os.PathLike, options: BatchOptions = BatchOptions(),
              address: str | None = None, workers: int | None = None, progress: bool = True,
              limit: int | None = None) -> BatchSummary:
    """Recognise ``paths`` (files, folders, globs; the first ``limit`` of them) on Ray Data,
    appending one row per input to ``output`` (JSON lines); inputs that already have a row there
    are skipped."""
    import ray

    t0 = time.perf_counter()
    output = Path(output)
    done = read_done(output)  # before anything else: a file that is not ours ends the job untouched
    files, failures = expand_inputs(paths)
    files = files[:limit] if limit else files
    for e in failures:
        click.echo(f"error: {printable(str(e))}", err=True)
    todo = [f for f in dict.fromkeys(files) if printable(f) not in done]
    summary = BatchSummary(skipped=len(set(files)) - len(todo))
    summary.errors = sum(done.get(printable(f), False) for f in set(files))
    if todo:
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS")
            # a local instance for one job needs no dashboard; a cluster's is the cluster's business
            ray_context = ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING,
                                   **({} if address else {"include_dashboard": False}))
            if not address:  # the local instance ends with this command, even after a kill -9
                from hmer_runtime.serving import ray_reaper

                ray_reaper.start(ray_context.address_info["session_dir"])
        if not progress:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # rows in input order, as hmer-run writes them
        context.enable_progress_bars = progress
        window = WINDOW_BATCHES * options.batch_size
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1) // options.cpus))
        workers = max(1, min(workers, -(-len(todo) // window)))
        ds = ray.data.from_items([{"file": f} for f in todo], override_num_blocks=-(-len(todo) // window))
        ds = ds.map_batches(RecognizeFiles, fn_constructor_kwargs={"options": options}, batch_size=window,
                            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=options.cpus,
                            num_gpus=options.gpus or None)
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "a", encoding="utf-8") as out:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                # One write per row, flushed: a killed job leaves whole rows (and at most one torn tail).
                for row, failed in zip(batch["row"], batch["failed"]):
                    out.write(str(row) + "\n")
                    out.flush()
                    summary.written += 1
                    summary.errors += bool(failed)
    summary.seconds = time.perf_counter() - t0
    if failures:
        summary.errors += len(failures)
    return summary


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("paths", nargs=-1)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="JSON lines to append to (one row per input, as hmer-run --json); reruns skip inputs in it.")
@click.option("--address", help="The Ray cluster to join (default: $RAY_ADDRESS, else a local instance).")
@click.option("--workers", type=click.IntRange(min=1), help="Workers (default: the cluster's CPUs / --worker-cpus).")
@click.option("--worker-cpus", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
              help="CPUs each worker reserves (and its threads, unless --threads).")
@click.option("--worker-gpus", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="GPUs each worker reserves (use with --provider cuda).")
@click.option("--model", "model_dir", type=click.Path(), help="Exported model directory (default: bundled model).")
@click.option("--beam", type=click.IntRange(min=1), help="Beam width, 1 = greedy (default: the model's).")
@PROVIDER_OPTION
@click.option("--variant", default="fp32", show_default=True, help="Graph variant: fp32, int8 or fp16.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--limit", type=click.IntRange(min=1), help="Recognise only the first N inputs.")
@click.option("--threads", default=0, type=click.IntRange(min=0), help="CPU threads per worker (0 = its CPUs).")
@click.option("--progress/--no-progress", default=True, help="Ray Data's progress bars on stderr.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(paths, output, address, workers, worker_cpus, worker_gpus, model_dir, beam, provider, variant, batch_size,
         limit, threads, progress, debug) -> None:
    """Recognise PATHS (images, .inkml, directories, globs, @LIST files; - = stdin) on Ray, rows to OUTPUT."""
    try:
        import ray  # noqa: F401
    except ImportError as e:
        raise click.ClickException("hmer-batch needs the ray extra: pip install 'hmer[ray]'") from e
    if not paths:
        raise click.UsageError(f"give at least one input ({', '.join(INPUT_SUFFIXES)}), directory or glob")
    from hmer_runtime.recognizer import Recognizer

    Recognizer(model_dir, "cpu", variant)  # fail fast on a bad model, before Ray starts
    options = BatchOptions(str(model_dir) if model_dir else None, provider, variant, beam, batch_size, threads,
                           worker_cpus, worker_gpus)
    s = run_batch(list(paths), output, options, address, workers, progress, limit)
    click.echo(f"{s.written} row(s) written to {printable(str(output))}, {s.skipped} already there, "
               f"{s.errors} input(s) failed, {s.seconds:.1f} s", err=True)
    if s.errors:
        sys.exit(1)


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
