"""Where one decode's time goes: cProfile over ``OnnxModel.decode`` on real expressions.

    python -m benchmarks.profile_decode --data ../shared/data/crohme/crohme-2014.tar.gz --limit 64 --batch 8

Prints ms per expression split into encoder, decoder steps and rescoring (``Timings``), then the
functions with the most time of their own. The first two batches warm up, untimed.
"""

from __future__ import annotations

import cProfile
import pstats
import time

import click

from hmer_bench.latency import _batches, load_inputs
from hmer_runtime.cli_util import CONTEXT_SETTINGS
from hmer_runtime.engine.model_spec import ModelSpec
from hmer_runtime.engine.onnx_model import OnnxModel, Timings
from hmer_runtime.engine.providers import ProviderConfig
from hmer_runtime.inputs.preprocess import pad_batch


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--model", "model_dir", type=click.Path(file_okay=False), help="Model directory (default: bundled).")
@click.option("--data", type=click.Path(exists=True), help="Images/InkML source (default: the bundled benchmark set).")
@click.option("--limit", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--beam", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--batch", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", default=2, show_default=True, type=click.IntRange(min=0))
@click.option("--top", default=14, show_default=True, type=click.IntRange(min=1))
def main(model_dir, data, limit, beam, batch, threads, top) -> None:
    """Profile decoding at one beam width and batch size."""
    from hmer_runtime.recognizer import BUNDLED_MODEL

    spec = ModelSpec.load(model_dir or BUNDLED_MODEL)
    images = load_inputs(spec, data, limit)
    model = OnnxModel(spec, "fp32", ProviderConfig("cpu", threads))
    options = spec.decode.with_overrides(beam=beam)
    chunks = [pad_batch(c, spec.stride) for c in _batches(images, batch)]
    for x, m in chunks[:2]:
        model.decode(x, m, options)
    t = Timings()
    profile = cProfile.Profile()
    t0 = time.perf_counter()
    profile.enable()
    for x, m in chunks:
        model.decode(x, m, options, timings=t)
    profile.disable()
    n = len(images)
    total = (time.perf_counter() - t0) * 1000 / n
    click.echo(f"beam {beam}, batch {batch}, {n} expressions: {total:.1f} ms/expr; encoder {t.encoder_ms / n:.1f}, "
               f"steps {t.decoder_ms / n:.1f}, rescoring {t.rescore_ms / n:.1f}, search and copies "
               f"{total - (t.encoder_ms + t.decoder_ms + t.rescore_ms) / n:.1f}; {t.steps} step calls")
    pstats.Stats(profile).sort_stats("tottime").print_stats(top)


if __name__ == "__main__":
    main()
