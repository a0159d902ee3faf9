"""``hmer-eval``: ExpRate / <=1 / <=2 / WER of a checkpoint on a data source, with per-expression JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import click

from hmer_runtime.cli_util import (
    CONTEXT_SETTINGS,
    GRAMMAR_OPTION,
    PROGRESS_OPTION,
    PROVIDER_OPTION,
    SCALES_OPTION,
    SEARCH_OPTION,
    SIDE_BEAM_OPTION,
    run_cli,
)
from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.inputs.preprocess import PreprocessConfig
from hmer_runtime.inputs.render import RenderConfig
from hmer_runtime.text.metrics import format_summary
from hmer_runtime.text.vocab import Vocab


@dataclass(frozen=True)
class EvalOptions:
    """How ``evaluate_checkpoint`` reads a model; every decode setting left None is the model's own."""

    beam: int | None = None  # None: the model's decode.beam, as hmer-run decodes
    limit: int | None = None  # the first N expressions (only those are prepared)
    batch_size: int = 16
    variant: str = "fp32"  # an exported model's graphs: fp32, int8, fp16
    provider: str = "auto"
    weights: str = "average"  # a checkpoint's moving average (train.ema) or its trained weights
    input_scale: float | None = None  # a checkpoint's decode.input_scale (an export's is fixed)
    grammar: bool | None = None
    search: str | None = None  # hmer, or comer: CoMER's search in both directions
    scales: tuple[float, ...] | None = None  # sizes each input is read at (decode.scales)
    side_beam: int | None = None  # beam width at the sizes other than the model's own (decode.side_beam)
    vocab_file: str | None = None  # a CoMER checkpoint's dictionary.txt
    teacher_forced: bool = False  # also a checkpoint's teacher-forced loss and token accuracy
    progress: bool | None = None  # bars on stderr; None: on a terminal only


@dataclass
class LoadedModel:
    """A checkpoint or an exported model, ready to decode prepared data: what reads and scores it."""

    decoder: object  # TorchDecoder or OnnxModel: decode(images, mask, options)
    decode: DecodeOptions
    vocab: Vocab
    render: RenderConfig
    preprocess: PreprocessConfig
    roots: list
    cache: Path
    stride: int
    torch_model: object = None  # a checkpoint's module (teacher-forced figures)

    def views(self, source: Path, limit: int | None = None, progress: bool | None = None,
              scales: tuple[float, ...] | None = None) -> list:
        """``source`` prepared at each of ``scales`` (default: the decode options')."""
        from hmer_train.prepared import prepare

        return [prepare(source, self.render, self.preprocess, self.cache, progress=progress, limit=limit, scale=f)
                for f in (scales or self.decode.scales)]


def load_for_eval(model_path: str, o: EvalOptions = EvalOptions()) -> LoadedModel:
    """A checkpoint (PyTorch) or an exported model directory (ONNX Runtime) with ``o``'s settings."""
    from hmer_runtime.inputs.sources import DEFAULT_ROOTS
    from hmer_train.prepared import DEFAULT_CACHE

    if Path(model_path).is_dir():
        from hmer_runtime.errors import ModelError
        from hmer_runtime.recognizer import Recognizer

        if o.input_scale is not None:
            raise ModelError(model_path, "an exported model reads at the input scale it was exported with; "
                                         "re-export with hmer-export --input-scale")
        if o.teacher_forced:
            raise ModelError(model_path, "teacher-forced figures need a checkpoint, not an exported model")
        rec = Recognizer(model_path, o.provider, o.variant, beam=o.beam, grammar=o.grammar, search=o.search,
                         scales=o.scales, side_beam=o.side_beam)
        return LoadedModel(rec.model, rec.options, rec.spec.vocab, rec.spec.render, rec.spec.preprocess,
                           DEFAULT_ROOTS, DEFAULT_CACHE, rec.spec.stride)
    from hmer_train.checkpoint import load_model
    from hmer_train.config import reading
    from hmer_train.decoding import TorchDecoder

    torch_model, vocab, ckpt = load_model(model_path, weights=o.weights, input_scale=o.input_scale,
                                          vocab=o.vocab_file)
    cfg = ckpt["config"]
    read = reading(cfg)
    decode = read.decode.with_overrides(beam=o.beam, grammar=o.grammar, search=o.search, scales=o.scales,
                                        side_beam=o.side_beam)
    return LoadedModel(TorchDecoder(torch_model, vocab), decode, vocab, read.render, read.preprocess,
                       list(cfg.data_roots), Path(cfg.cache_dir) if cfg.cache_dir else DEFAULT_CACHE,
                       1, torch_model)  # the PyTorch model pads itself


def evaluate_checkpoint(model_path: str, source: str | None, split: str | None,
                        options: EvalOptions = EvalOptions(), out: str | None = None) -> dict:
    """Metrics of a checkpoint (PyTorch) or an exported model directory (ONNX Runtime) on a source
    (or, with ``split``, a split of the dataset named by ``source``), and one JSON line per
    expression in ``out``. Both kinds of model go through the same data, batching and scoring;
    only the decoder differs. The summary holds the beam and scales it decoded with."""
    o = options
    from hmer_runtime.inputs.sources import resolve_split
    from hmer_train.evaluation import evaluate

    m = load_for_eval(model_path, o)
    src = resolve_split(source, split, m.roots) if split else Path(source)
    views = m.views(src, o.limit, o.progress)
    data = views[0]
    if len(data) == 0:
        from hmer_runtime.errors import DatasetError

        shown = "; ".join(data.errors[:3]) + (f"; ... ({len(data.errors)} in all)" if len(data.errors) > 3 else "")
        raise DatasetError(str(src), "no usable sample to evaluate" + (f" ({shown})" if shown else ""))
    summary, rows = evaluate(m.decoder, views, m.vocab, m.decode, o.limit, o.batch_size, stride=m.stride,
                             progress=o.progress)
    summary["beam"] = m.decode.beam
    summary["scales"] = list(m.decode.scales)
    summary["side_beam"] = m.decode.side_beam
    if o.teacher_forced:
        from hmer_train.train import teacher_forced as tf_figures

        summary.update(tf_figures(m.torch_model, data, m.vocab, "cpu", o.limit, batch_size=o.batch_size))
    summary["errors"] = data.errors
    if out:
        from hmer_runtime.files import write_atomic

        write_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                  for r in sorted(rows, key=lambda r: r["file"])).encode("utf-8"))
    return summary


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("model", required=False)
@click.argument("data", required=False)
@click.option("--dataset", help="Evaluate every test split of this dataset (model from config 'checkpoint:').")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.option("--beam", type=click.IntRange(min=1),
              help="Beam width, 1 = greedy (default: the model's own decode.beam, as hmer-run decodes).")
@click.option("-o", "--output", "--out", "out", type=click.Path(dir_okay=False),
              help="Write one JSON line per expression.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N expressions.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--variant", default="fp32", show_default=True, help="Exported model: fp32, int8 or fp16 graphs.")
@PROVIDER_OPTION
@click.option("--weights", type=click.Choice(["average", "trained"]), default="average", show_default=True,
              help="Checkpoint: the moving average of the weights (train.ema) or the trained weights.")
@click.option("--input-scale", type=float,
              help="Checkpoint: read inputs at this multiple of the training symbol size (default: the "
                   "config's decode.input_scale); compare a few on validation data.")
@GRAMMAR_OPTION
@SEARCH_OPTION
@SCALES_OPTION
@SIDE_BEAM_OPTION
@click.option("--vocab", "vocab_file", type=click.Path(dir_okay=False),
              help="A CoMER checkpoint's vocabulary file (its dictionary.txt).")
@click.option("--teacher-forced", is_flag=True,
              help="Checkpoint: also the teacher-forced loss per token and next-token accuracy.")
@PROGRESS_OPTION
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(model, data, dataset, config_path, beam, out, limit, batch_size, as_json, variant, provider,
         weights, input_scale, grammar, search, scales, side_beam, vocab_file, teacher_forced, progress,
         debug) -> None:
    """Evaluate MODEL (a checkpoint, or a directory from hmer-export) on DATA (InkML folder/archive or
    image folder).

    With --dataset NAME and no MODEL, the checkpoint comes from `checkpoint:` in the config
    and every test split present is evaluated.
    """
    from hmer_runtime.files import check_writable
    from hmer_train.config import load_config

    if out:
        check_writable(out)  # before the evaluation, not after it
    jobs: list[tuple[str, str, str | None]] = []
    if dataset:
        cfg = load_config(config_path or ("config.yaml" if Path("config.yaml").is_file() else None))
        ckpt = model or cfg.checkpoint
        if not ckpt:
            raise click.UsageError("no model given and 'checkpoint:' is empty in the config")
        from hmer_runtime.errors import DatasetError
        from hmer_runtime.inputs.sources import resolve_split

        for split in cfg.test_splits:
            try:
                resolve_split(dataset, split, list(cfg.data_roots))
            except DatasetError as e:
                click.echo(f"skipping {dataset}:{split}: {e.message.split(';')[0]}", err=True)
                continue
            jobs.append((ckpt, dataset, split))
        if not jobs:
            raise click.UsageError(f"no test split of {dataset} found")
    else:
        if not (model and data):
            raise click.UsageError("give MODEL and DATA, or --dataset NAME")
        jobs.append((model, data, None))
    options = EvalOptions(beam, limit, batch_size, variant, provider, weights, input_scale, grammar, search,
                          scales, side_beam, vocab_file, teacher_forced, progress)
    for ckpt, src, split in jobs:
        s = evaluate_checkpoint(ckpt, src, split, options, out)
        label = f"{src}:{split}" if split else src
        if as_json:
            click.echo(json.dumps({"data": label, **s}))
        else:
            tf = f" | teacher-forced loss {s['tf_loss']:.3f} token acc {s['tf_acc']:.2f}" if teacher_forced else ""
            sizes = f" scales {','.join(f'{f:g}' for f in s['scales'])}" if s["scales"] != [1.0] else ""
            click.echo(f"{label} beam {s['beam']}{sizes}: {format_summary(s)}{tf}")
            if s["errors"]:
                click.echo(f"  {len(s['errors'])} unreadable/unlabelled samples skipped")


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
