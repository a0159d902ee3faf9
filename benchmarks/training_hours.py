"""Hours of training steps in a run's log.csv, the figure the model cards quote.

    python -m benchmarks.training_hours models/cpu-v2/log.csv --until 58128 --epoch-steps 1384 --expressions 8835

Sums the time between consecutive rows (one every ``log_every`` steps), leaving out gaps longer
than ``--max-gap`` seconds: those are pauses, validations and the time the run was stopped, not
training. With ``--epoch-steps`` and ``--expressions`` it also gives the images per second that
those hours mean (expressions per epoch times the epochs the counted steps cover).
"""

import csv
from pathlib import Path

import click

from hmer_runtime.cli_util import CONTEXT_SETTINGS


def training_seconds(rows: list[dict], max_gap: float) -> tuple[float, int]:
    """(seconds, steps) of the intervals between consecutive rows no longer than ``max_gap``."""
    seconds, steps = 0.0, 0
    for prev, row in zip(rows, rows[1:]):
        dt, ds = float(row["time"]) - float(prev["time"]), int(row["step"]) - int(prev["step"])
        if ds > 0 and 0 < dt <= max_gap:
            seconds, steps = seconds + dt, steps + ds
    return seconds, steps


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("log", type=click.Path(exists=True, dir_okay=False))
@click.option("--from", "first", default=0, show_default=True, help="Count from this step.")
@click.option("--until", type=int, help="Count up to this step (default: the log's end).")
@click.option("--max-gap", default=200.0, show_default=True, help="Longer gaps between rows are not training.")
@click.option("--epoch-steps", type=int, help="Optimiser steps per epoch, for images/s.")
@click.option("--expressions", type=int, help="Training expressions per epoch, for images/s.")
def main(log: str, first: int, until: int | None, max_gap: float, epoch_steps: int | None,
         expressions: int | None) -> None:
    rows = [r for r in csv.DictReader(Path(log).open())
            if first <= int(r["step"]) <= (until if until is not None else int(r["step"]))]
    seconds, steps = training_seconds(rows, max_gap)
    line = f"{log}: steps {rows[0]['step']}-{rows[-1]['step']}: {seconds / 3600:.2f} h of training, {steps} steps"
    if epoch_steps and expressions and seconds:
        line += f", {expressions * steps / epoch_steps / seconds:.2f} images/s"
    click.echo(line)


if __name__ == "__main__":
    main()
