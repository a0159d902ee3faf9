"""``hmer-export CHECKPOINT OUT_DIR``: encoder.onnx + one-step decoder.onnx + model.json, checked."""

from __future__ import annotations

import click

from hmer_runtime.cli_util import CONTEXT_SETTINGS, SCALES_OPTION, SIDE_BEAM_OPTION, run_cli


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--opset", default=17, show_default=True, help="ONNX opset (>= 17 for LayerNormalization).")
@click.option("--fp16", is_flag=True, help="Also write fp16 graphs (for GPUs).")
@click.option("--int8", is_flag=True, help="Also write dynamically quantized int8 graphs (for CPUs).")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare the graphs with PyTorch (outputs, every step, greedy and beam sequences).")
@click.option("--check-data", type=click.Path(exists=True),
              help="Also check on this labelled source (InkML folder/archive, image folder); reports the "
                   "int8/fp16 ExpRate change on it.")
@click.option("--check-limit", default=64, show_default=True, help="Expressions of --check-data to use.")
@click.option("--input-scale", type=float,
              help="Read inputs at this multiple of the training symbol size (default: the checkpoint's "
                   "decode.input_scale); pick it on validation data with hmer-eval --input-scale.")
@click.option("--vocab", type=click.Path(dir_okay=False),
              help="A CoMER checkpoint's vocabulary file (its dictionary.txt).")
@click.option("--beam", type=click.IntRange(min=1),
              help="The beam width runtimes decode with by default (model.json decode.beam; default: the "
                   "checkpoint's decode.beam); pick it from ExpRate and latency on validation data.")
@SCALES_OPTION
@SIDE_BEAM_OPTION
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it exists.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(checkpoint, out_dir, opset, fp16, int8, check, check_data, check_limit, input_scale, vocab, beam, scales,
         side_beam, force, debug) -> None:
    """Export CHECKPOINT (from hmer-train, or CoMER's own with --vocab) to OUT_DIR for the torch-free runtime."""
    from .exporter import ExportOptions, export_checkpoint

    options = ExportOptions(opset=opset, fp16=fp16, int8=int8, check=check, check_data=check_data,
                            check_limit=check_limit, force=force, input_scale=input_scale, vocab=vocab, beam=beam,
                            scales=scales, side_beam=side_beam)
    raw = export_checkpoint(checkpoint, out_dir, options, log=lambda s: click.echo(s, err=True))
    click.echo(f"wrote {out_dir}: {', '.join(sorted(raw['variants']))} ({raw['parameters']:,} parameters)")


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
