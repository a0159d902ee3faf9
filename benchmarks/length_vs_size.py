"""How many tokens an expression has per symbol size of its model input: the basis of a length cap.

    python -m benchmarks.length_vs_size ../shared/data/crohme/crohme-train.tar.gz \
        ../shared/data/crohme/crohme-2013.tar.gz --every 3

Each labelled expression is drawn and preprocessed as the model reads it (``--model``'s render
and preprocessing, default the bundled model), and its truth's token count is divided by the
input's width, its area and its width + height, in units of ``preprocess.symbol_px`` (padding
left out). Prints the percentiles; a cap on decoding length has to lie above the maximum.
"""

from __future__ import annotations

import click
import numpy as np

from hmer_runtime.cli_util import CONTEXT_SETTINGS
from hmer_runtime.engine.model_spec import ModelSpec
from hmer_runtime.errors import HmerError
from hmer_runtime.inputs.render import model_input
from hmer_runtime.inputs.sources import iter_source, load_labelled
from hmer_runtime.recognizer import BUNDLED_MODEL


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("sources", nargs=-1, required=True)
@click.option("--model", "model_dir", type=click.Path(file_okay=False), help="Default: bundled.")
@click.option("--every", default=1, show_default=True, help="Every Nth expression of the training set.")
def main(sources: tuple[str, ...], model_dir: str | None, every: int) -> None:
    spec = ModelSpec.load(model_dir or BUNDLED_MODEL)
    pre = spec.preprocess
    rows = []
    for src in sources:
        step = every if "train" in src else 1
        for i, sample in enumerate(iter_source(src)):
            if i % step:
                continue
            try:
                ink, tokens = load_labelled(sample)
                h, w = model_input(ink, spec.render, pre, sample.name).shape
            except HmerError:
                continue
            rows.append((len(tokens), (w - 2 * pre.pad) / pre.symbol_px, (h - 2 * pre.pad) / pre.symbol_px))
    n, wu, hu = np.array(rows, dtype=np.float64).T
    click.echo(f"{len(rows)} expressions; tokens per symbol size of the input's")
    click.echo("| measure | median | 99th pct | 99.9th pct | max |\n|---|---|---|---|---|")
    for name, x in (("width", wu), ("area", wu * hu), ("width + height", wu + hu)):
        r = n / np.maximum(x, 0.5)
        p50, p99, p999 = np.percentile(r, [50, 99, 99.9])
        click.echo(f"| {name} | {p50:.2f} | {p99:.2f} | {p999:.2f} | {r.max():.2f} |")


if __name__ == "__main__":
    main()
