"""``hmer-export CHECKPOINT OUT_DIR``: encoder.onnx + one-step decoder.onnx + model.json, checked."""

from __future__ import annotations

import click

from hmer_runtime.cli_util import CONTEXT_SETTINGS, run_cli


def _check_data(source: str, ckpt_path: str, limit: int, input_scale: float | None, vocab: str | None):
    """Model inputs (as the exported model will read them) and token ids of up to ``limit``
    labelled expressions of ``source``."""
    from hmer_runtime.text.vocab import Vocab
    from hmer_train.checkpoint import load_checkpoint
    from hmer_train.config import image_configs
    from hmer_train.prepared import DEFAULT_CACHE, prepare

    ckpt = load_checkpoint(ckpt_path, input_scale=input_scale, vocab=vocab)
    cfg = ckpt["config"]
    vocab = Vocab.from_tokens(ckpt["vocab"])
    data = prepare(source, *image_configs(cfg, inference=True), cfg.cache_dir or DEFAULT_CACHE)
    data = data.select(range(min(limit, len(data))))
    truth = [vocab.encode(toks) for toks in data.tokens]
    return [data.image(i) for i in range(len(data))], truth


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
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it exists.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(checkpoint, out_dir, opset, fp16, int8, check, check_data, check_limit, input_scale, vocab, beam, force,
         debug) -> None:
    """Export CHECKPOINT (from hmer-train, or CoMER's own with --vocab) to OUT_DIR for the torch-free runtime."""
    from .exporter import export_checkpoint

    images, truth = _check_data(check_data, checkpoint, check_limit, input_scale, vocab) if check_data \
        else (None, None)
    raw = export_checkpoint(checkpoint, out_dir, opset, fp16, int8, check, images, truth, force,
                            log=lambda s: click.echo(s, err=True), input_scale=input_scale, vocab=vocab, beam=beam)
    click.echo(f"wrote {out_dir}: {', '.join(sorted(raw['variants']))} ({raw['parameters']:,} parameters)")


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
