"""Which sizes to read inputs at (``decode.scales``): ExpRate of sets of scales, decoded once each.

    python -m benchmarks.scale_sets hmer_runtime/models/default ../shared/data/crohme/crohme-2013.tar.gz \
        --beam 10 --scales 0.8,0.87,0.93,1,1.07,1.15,1.25 --sets "1;0.87,1,1.15;0.93,1,1.07;1,1.15"

Each scale of ``--scales`` reads the whole source once (a checkpoint in PyTorch, an exported model
in ONNX Runtime, as ``hmer-eval`` does); every set of ``--sets`` (each a subset of ``--scales``) is
then scored by pooling its views (``decoding.pooling``), as ``hmer-run --scales`` reads. The
table (markdown) gives each set's ExpRate, <=1, <=2 and its decoding time per expression, the
sum of its scales' times (no process is timed twice; pause other work for published figures).
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from hmer_runtime.cli_util import CONTEXT_SETTINGS
from hmer_runtime.decoding.pooling import pool
from hmer_train.cli_eval import EvalOptions, load_for_eval
from hmer_train.evaluation import decode_set, score


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(f) for f in text.split(","))


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("model")
@click.argument("data", type=click.Path(exists=True))
@click.option("--beam", type=click.IntRange(min=1), help="Beam width (default: the model's).")
@click.option("--scales", default="0.87,1,1.15", show_default=True, help="Every scale to decode at.")
@click.option("--sets", "sets_", default="1;0.87,1,1.15", show_default=True,
              help="Sets of scales to score, ';'-separated.")
@click.option("--limit", type=click.IntRange(min=1), help="The first N expressions.")
@click.option("--input-scale", type=float, help="A checkpoint's decode.input_scale.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
def main(model: str, data: str, beam: int | None, scales: str, sets_: str, limit: int | None,
         input_scale: float | None, batch_size: int) -> None:
    every = _floats(scales)
    sets = [_floats(s) for s in sets_.split(";")]
    missing = sorted({f for s in sets for f in s} - set(every))
    if missing:
        raise click.UsageError(f"--sets uses scales not in --scales: {missing}")
    m = load_for_eval(model, EvalOptions(beam=beam, provider="cpu", input_scale=input_scale))
    views = m.views(Path(data), limit, scales=every)
    decoded, seconds = {}, {}
    for f, view in zip(every, views):
        t0 = time.perf_counter()
        decoded[f] = decode_set(m.decoder, view, m.decode, batch_size, stride=m.stride)
        seconds[f] = time.perf_counter() - t0
    n = len(views[0])
    click.echo(f"{model} on {data}, beam {m.decode.beam}, {n} expressions\n")
    click.echo("| scales | ExpRate | <=1 | <=2 | decoding ms/expr |\n|---|---|---|---|---|")
    for s in sets:
        summary, _ = score(views[0], m.vocab, [pool([decoded[f][i] for f in s]) for i in range(n)])
        ms = 1000 * sum(seconds[f] for f in s) / n
        click.echo(f"| {', '.join(f'{f:g}' for f in s)} | {summary['exprate']:.2f} | {summary['le1']:.2f} | "
                   f"{summary['le2']:.2f} | {ms:.0f} |")


if __name__ == "__main__":
    main()
