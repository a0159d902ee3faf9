"""Evaluate an exported model directory the way the model card reports it, and record the figures.

    python -m benchmarks.evaluate_model hmer_runtime/models/default --checkpoint models/cpu-v3/last.pt

For each split (CROHME 2013, 2014) and decoding (greedy, beam): ExpRate / <=1 / <=2 / WER of the
fp32 graphs (at the model's ``decode.scales``, and at its own size alone when it reads several),
the int8 graphs, and (greedy, 2014) the PyTorch checkpoint, plus how many 2014 predictions
PyTorch and ONNX share. The table is printed as markdown and stored in the model's
``model.json`` under ``evaluation``, where ``tests/test_bundled_model.py`` checks that a fresh
``hmer-eval`` reproduces it.
"""

import json
import tempfile
from pathlib import Path

import click

from hmer_runtime.cli_util import CONTEXT_SETTINGS
from hmer_runtime.engine.model_spec import MODEL_FILE
from hmer_runtime.files import write_atomic
from hmer_train.cli_eval import EvalOptions, evaluate_checkpoint

ONE_SIZE = (1.0,)
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "crohme"


def _predictions(path: Path) -> dict[str, str]:
    return {r["file"]: r["prediction"] for r in map(json.loads, path.read_text().splitlines())}


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), help="PyTorch parity on 2014.")
@click.option("--beam", default=5, show_default=True)
@click.option("--splits", default="2013,2014", show_default=True)
@click.option("--data", "data_dir", default=str(DATA), show_default=True)
def main(model_dir: str, checkpoint: str | None, beam: int, splits: str, data_dir: str) -> None:
    spec_path = Path(model_dir) / MODEL_FILE
    spec = json.loads(spec_path.read_text())
    rows, evaluation = [], {}
    scales = tuple(spec["decode"].get("scales", ONE_SIZE))
    tmp = Path(tempfile.mkdtemp())
    for split in splits.split(","):
        src = str(Path(data_dir) / f"crohme-{split}.tar.gz")
        runs = [("onnx fp32", model_dir, "fp32", 1, scales), ("onnx fp32", model_dir, "fp32", beam, scales)]
        if len(scales) > 1:  # what reading at the model's size alone gives
            runs += [("onnx fp32", model_dir, "fp32", 1, ONE_SIZE), ("onnx fp32", model_dir, "fp32", beam, ONE_SIZE)]
        if "int8" in spec["variants"]:
            runs += [("onnx int8", model_dir, "int8", 1, scales)]
        if checkpoint and split == "2014":
            runs.append(("pytorch", checkpoint, "fp32", 1, scales))
        for label, model, variant, b, sizes in runs:
            one = " one size" if sizes != scales else ""
            out = tmp / f"{split}-{label.replace(' ', '_')}-{b}{one.replace(' ', '_')}.jsonl"
            # The checkpoint reads at the exported model's input scale, so both see the same images.
            scale = spec["decode"].get("input_scale", 1.0) if label == "pytorch" else None
            s = evaluate_checkpoint(model, src, None, EvalOptions(beam=b, variant=variant, provider="cpu",
                                                                  input_scale=scale, scales=sizes), str(out))
            key = f"crohme-{split} {label} beam {b}{one}"
            evaluation[key] = {k: round(s[k], 2) for k in ("n", "exprate", "le1", "le2", "wer")}
            rows.append((split, label, f"{b}{one}", s))
            click.echo(f"{key}: ExpRate {s['exprate']:.2f}", err=True)
        if checkpoint and split == "2014":
            a, b = _predictions(tmp / "2014-pytorch-1.jsonl"), _predictions(tmp / "2014-onnx_fp32-1.jsonl")
            same = sum(a[k] == b.get(k) for k in a)
            evaluation["crohme-2014 pytorch-onnx greedy agreement"] = {"same": same, "n": len(a),
                                                                       "percent": round(100 * same / len(a), 2)}
    spec["evaluation"] = evaluation
    write_atomic(spec_path, (json.dumps(spec, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    click.echo("| split | model | beam | ExpRate | ≤1 | ≤2 | WER |")
    click.echo("|---|---|---|---|---|---|---|")
    for split, label, b, s in rows:
        click.echo(f"| CROHME {split} | {label} | {b} | {s['exprate']:.2f} | {s['le1']:.2f} | {s['le2']:.2f} | "
                   f"{s['wer']:.2f} |")
    if "crohme-2014 pytorch-onnx greedy agreement" in evaluation:
        agree = evaluation["crohme-2014 pytorch-onnx greedy agreement"]
        click.echo(f"\nPyTorch vs ONNX fp32 greedy predictions on CROHME 2014: {agree['same']}/{agree['n']} "
                   f"identical ({agree['percent']} %)")


if __name__ == "__main__":
    main()
