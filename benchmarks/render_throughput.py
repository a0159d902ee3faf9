"""Rendering throughput: InkML parse + render of a whole source, single process, per pen.

    python -m benchmarks.render_throughput ../shared/data/crohme/crohme-2014.tar.gz --limit 200

Renders with the bundled model's render settings (or ``--model``'s), once with each pen
(``hmer_runtime.inputs.render``: PIL's wide lines, or the capsule pen inference uses).
"""

from __future__ import annotations

import time
from dataclasses import replace

import click

from hmer_runtime.cli_util import CONTEXT_SETTINGS
from hmer_runtime.engine.model_spec import ModelSpec
from hmer_runtime.errors import HmerError
from hmer_runtime.inputs.render import PENS, render_ink
from hmer_runtime.inputs.sources import iter_source
from hmer_runtime.recognizer import BUNDLED_MODEL


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("src")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N files.")
@click.option("--model", "model_dir", type=click.Path(file_okay=False), help="Render settings of this model.")
def main(src: str, limit: int | None, model_dir: str | None) -> None:
    t0 = time.perf_counter()
    samples = list(iter_source(src))[:limit]  # reads and parses the XML
    inks = []
    for s in samples:
        try:
            inks.append(s.load())
        except HmerError:
            pass
    parse = time.perf_counter() - t0
    print(f"{src}: {len(samples)} files, {len(inks)} readable; parse {len(samples) / parse:.0f} expr/s")
    base = ModelSpec.load(model_dir or BUNDLED_MODEL).render
    for pen in PENS:
        config = replace(base, pen=pen)
        t1 = time.perf_counter()
        for ink in inks:
            render_ink(ink, config)
        ms = (time.perf_counter() - t1) * 1000 / max(1, len(inks))
        print(f"render, {pen} pen: {ms:.1f} ms per expression ({1000 / ms:.0f} expr/s)")


if __name__ == "__main__":
    main()
