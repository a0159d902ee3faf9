"""Rendering throughput: InkML parse + render of a whole source, single process.

    python -m benchmarks.render_throughput ../shared/data/crohme/crohme-2014.tar.gz
"""

from __future__ import annotations

import time

import click

from hmer_runtime.cli_util import CONTEXT_SETTINGS
from hmer_runtime.errors import HmerError
from hmer_runtime.render import render_ink
from hmer_runtime.sources import iter_source


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("src")
def main(src: str) -> None:
    t0 = time.perf_counter()
    samples = list(iter_source(src))  # reads and parses the XML
    t1 = time.perf_counter()
    ok = 0
    for s in samples:
        try:
            render_ink(s.load())
            ok += 1
        except HmerError:
            pass
    t2 = time.perf_counter()
    print(f"{src}: {len(samples)} files; parse {len(samples) / (t1 - t0):.0f} expr/s; "
          f"render {ok / (t2 - t1):.0f} expr/s; both {ok / (t2 - t0):.0f} expr/s")


if __name__ == "__main__":
    main()
