"""Which sizes to read inputs at (``decode.scales``): ExpRate of sets of scales, decoded once each.

    python -m benchmarks.scale_sets hmer_runtime/models/default ../shared/data/crohme/crohme-2013.tar.gz \
        --beam 10 --scales 0.8,0.87,0.93,1,1.07,1.15,1.25 --sets "1;0.87,1,1.15;0.93,1,1.07;1,1.15"

Each scale of ``--scales`` reads the whole source once per beam width it needs (a checkpoint in
PyTorch, an exported model in ONNX Runtime, as ``hmer-eval`` does); every set of ``--sets`` (each
a subset of ``--scales``) is then scored by pooling its views (``decoding.pooling``), as
``hmer-run --scales`` reads: its own size (the scale nearest 1) at ``--beam``, the others at each
width of ``--side-beams`` (default: the model's ``decode.side_beam``, or ``--beam``). The table
(markdown) gives each set's ExpRate, <=1, <=2 and its decoding time per expression, the sum of
its views' times (no process is timed twice; pause other work for published figures).
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from hmer_runtime.cli_util import CONTEXT_SETTINGS
from hmer_runtime.decoding.pooling import pool, view_options
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
@click.option("--side-beams", help="Beam widths to read each set's other sizes at, e.g. 5,3 "
                                    "(default: the model's decode.side_beam, or --beam).")
@click.option("--limit", type=click.IntRange(min=1), help="The first N expressions.")
@click.option("--input-scale", type=float, help="A checkpoint's decode.input_scale.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
def main(model: str, data: str, beam: int | None, scales: str, sets_: str, side_beams: str | None,
         limit: int | None, input_scale: float | None, batch_size: int) -> None:
    every = _floats(scales)
    sets = [_floats(s) for s in sets_.split(";")]
    missing = sorted({f for s in sets for f in s} - set(every))
    if missing:
        raise click.UsageError(f"--sets uses scales not in --scales: {missing}")
    m = load_for_eval(model, EvalOptions(beam=beam, provider="cpu", input_scale=input_scale))
    sides = [int(b) for b in side_beams.split(",")] if side_beams else [m.decode.side_beam or m.decode.beam]
    # each (set, side beam) row: the options of each of its views, in the set's order
    rows = [(s, side, [o.beam for o in view_options(m.decode.with_overrides(scales=s, side_beam=side), len(s))])
            for s in sets for side in (sides if len(s) > 1 else sides[:1])]
    views = dict(zip(every, m.views(Path(data), limit, scales=every)))
    decoded, seconds = {}, {}
    for key in sorted({(f, b) for s, _, beams in rows for f, b in zip(s, beams)}):
        t0 = time.perf_counter()
        decoded[key] = decode_set(m.decoder, views[key[0]], m.decode.with_overrides(beam=key[1]), batch_size,
                                  stride=m.stride)
        seconds[key] = time.perf_counter() - t0
    first = views[every[0]]
    n = len(first)
    click.echo(f"{model} on {data}, beam {m.decode.beam}, {n} expressions\n")
    click.echo("| scales | side beam | ExpRate | <=1 | <=2 | decoding ms/expr |\n|---|---|---|---|---|---|")
    for s, side, beams in rows:
        keys = list(zip(s, beams))
        summary, _ = score(first, m.vocab, [pool([decoded[k][i] for k in keys]) for i in range(n)])
        ms = 1000 * sum(seconds[k] for k in keys) / n
        click.echo(f"| {', '.join(f'{f:g}' for f in s)} | {min(side, m.decode.beam) if len(s) > 1 else '-'} | "
                   f"{summary['exprate']:.2f} | {summary['le1']:.2f} | {summary['le2']:.2f} | {ms:.0f} |")


if __name__ == "__main__":
    main()
