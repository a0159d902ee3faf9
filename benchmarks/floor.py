"""The physical floor of recognition on this machine: FLOPs per expression against what the CPU
can do, beside what the exported model reaches.

    python -m benchmarks.floor CHECKPOINT [--model DIR] [--data SOURCE] [--limit 50] [--threads 2]

* **Peak rates** -- GFLOP/s of a 1024^3 matrix product (what the encoder's convolutions and batched
  decoding can approach) and of a 1 x d x 4d matrix-vector product (what one hypothesis' step is
  made of), in torch on ``--threads`` threads.
* **Work** -- FLOPs per expression of the encoder and of greedy and beam decoding (rescoring
  included), counted by ``torch.utils.flop_counter.FlopCounterMode`` on the checkpoint's eager
  decode of each expression at batch 1.
* **Reached** -- the same expressions through the exported graphs (ONNX Runtime, fp32), timed per
  part with ``Timings``: GFLOP/s reached = FLOPs / time.
"""

from __future__ import annotations

import time

import click
import numpy as np

from hmer_runtime.cli_util import CONTEXT_SETTINGS, run_cli


def peak_gflops(m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """GFLOP/s of repeated (m x k) @ (k x n) float32 products in torch."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9


def count_flops(decoder, image: np.ndarray, options) -> tuple[float, float]:
    """(encoder FLOPs, decoder FLOPs) of one expression at batch 1, as the eager model decodes it
    with ``options`` (rescoring in the other direction included when they ask for it)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from hmer_runtime.inputs.preprocess import pad_batch

    x, m = (torch.from_numpy(a) for a in pad_batch([image], decoder.model.input_multiple))
    with torch.no_grad(), FlopCounterMode(display=False) as enc:
        decoder.model.encode(x, m)
    with torch.no_grad(), FlopCounterMode(display=False) as total:
        decoder.decode(x, m, options)
    encodes = 2 if options.rescores else 1  # rescore_r2l encodes the image again: not decoder work
    return enc.get_total_flops(), total.get_total_flops() - encodes * enc.get_total_flops()


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "model_dir", type=click.Path(file_okay=False),
              help="The checkpoint's export (default: the bundled model).")
@click.option("--data", type=click.Path(exists=True), help="Images/InkML source (default: the bundled benchmark set).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--beam", "beams", default="1,10", show_default=True)
@click.option("--threads", default=2, show_default=True, type=click.IntRange(min=1))
def main(checkpoint, model_dir, data, limit, beams, threads) -> None:
    """FLOPs per expression against this CPU's peak, and the rate the exported model reaches."""
    import torch

    from benchmarks.latency import _ints, load_inputs
    from hmer_runtime.engine.model_spec import ModelSpec
    from hmer_runtime.engine.onnx_model import OnnxModel, Timings
    from hmer_runtime.engine.providers import ProviderConfig
    from hmer_runtime.inputs.preprocess import pad_batch
    from hmer_runtime.recognizer import BUNDLED_MODEL
    from hmer_train.checkpoint import load_model
    from hmer_train.decoding import TorchDecoder

    torch.set_num_threads(threads)
    spec = ModelSpec.load(model_dir or BUNDLED_MODEL)
    images = load_inputs(spec, data, limit)
    model, vocab, _ = load_model(checkpoint)
    decoder = TorchDecoder(model, vocab)
    onnx_model = OnnxModel(spec, "fp32", ProviderConfig("cpu", threads))
    d = spec.architecture.get("decoder", {}).get("d_model", 256)
    gemm, gemv = peak_gflops(1024, 1024, 1024), peak_gflops(1, d, 4 * d)
    click.echo(f"{len(images)} expressions ({data or 'the bundled benchmark set'}), {threads} threads, torch "
               f"{torch.__version__}: 1024^3 matmul {gemm:.0f} GFLOP/s, 1 x {d} x {4 * d} matrix-vector "
               f"{gemv:.0f} GFLOP/s\n")
    click.echo("| part | beam | GFLOP per expression | ms per expression (ORT fp32, batch 1) | GFLOP/s reached |")
    click.echo("|---|---|---|---|---|")
    encoder_done = False
    for beam in _ints(beams):
        options = spec.decode.with_overrides(beam=beam)
        enc_f, dec_f, enc_ms, dec_ms = [], [], 0.0, 0.0
        for im in images:
            e, dflops = count_flops(decoder, im, options)
            enc_f.append(e)
            dec_f.append(dflops)
            x, m = pad_batch([im], spec.stride)
            onnx_model.decode(x, m, options)  # warm
            t = Timings()
            t0 = time.perf_counter()
            onnx_model.decode(x, m, options, timings=t)
            enc_ms += t.encoder_ms
            dec_ms += (time.perf_counter() - t0) * 1000 - t.encoder_ms
        n = len(images)
        if not encoder_done:
            click.echo(f"| encoder | - | {np.mean(enc_f) / 1e9:.2f} | {enc_ms / n:.1f} | "
                       f"{sum(enc_f) / 1e9 / (enc_ms / 1000):.0f} |")
            encoder_done = True
        name = "greedy" if beam == 1 else "beam search + rescoring"
        click.echo(f"| {name} | {beam} | {np.mean(dec_f) / 1e9:.2f} | {dec_ms / n:.1f} | "
                   f"{sum(dec_f) / 1e9 / (dec_ms / 1000):.0f} |")


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
