"""Fit a model's confidence on validation data and store it in its ``model.json``; measure it.

    python -m hmer_export.calibrate fit hmer_runtime/models/default ../shared/data/crohme/crohme-2013.tar.gz
    python -m hmer_export.calibrate check hmer_runtime/models/default ../shared/data/crohme/crohme-2014.tar.gz

``fit`` decodes the data with the model's own options, fits :class:`Calibration` on whether each
reading was exactly right, and writes it (and its figures) into ``model.json`` atomically.
``check`` reports, on other data, the expected calibration error (10 bins), the ExpRate of the
most confident half and how many readings above 0.7 and 0.9 are right, beside what the raw
``exp(score)`` gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from hmer_runtime.cli_util import CONTEXT_SETTINGS, run_cli
from hmer_runtime.decoding.confidence import Calibration, expected_calibration_error, fit
from hmer_runtime.engine.model_spec import MODEL_FILE
from hmer_runtime.files import write_atomic


def read(model_dir: str, data: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, right, raw exp(score)) of every expression of ``data`` read by the model."""
    import tempfile

    from hmer_train.cli_eval import EvalOptions, evaluate_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.jsonl"
        evaluate_checkpoint(model_dir, data, None, EvalOptions(limit=limit, provider="cpu"), str(out))
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    x = np.array([r["features"] for r in rows], dtype=np.float64)
    right = np.array([r["edits"] == 0 for r in rows], dtype=np.float64)
    raw = np.exp(np.array([r["score"] if r["score"] is not None else -50.0 for r in rows], dtype=np.float64))
    return x, right, raw


def figures(probability: np.ndarray, right: np.ndarray) -> dict:
    """ECE (10 bins), and the ExpRate of the most confident half and of all."""
    order = np.argsort(-probability, kind="stable")
    half = order[: max(1, len(order) // 2)]
    above = {f"right_above_{t}": [int((probability > t).sum()),
                                   round(100 * float(right[probability > t].mean()), 2) if (probability > t).any()
                                   else None] for t in (0.7, 0.9)}  # [readings, % of them right]
    return {"n": int(len(right)), "ece": round(expected_calibration_error(probability, right), 4),
            "exprate_confident_half": round(100 * float(right[half].mean()), 2),
            "exprate": round(100 * float(right.mean()), 2), **above}


@click.group(context_settings=CONTEXT_SETTINGS)
def main() -> None:
    """Fit and measure a model's confidence."""


@main.command("fit")
@click.argument("model_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("data")
@click.option("--limit", type=click.IntRange(min=1))
def fit_command(model_dir: str, data: str, limit: int | None) -> None:
    """Fit MODEL_DIR's confidence on DATA (validation data, never the test set) into its model.json."""
    x, right, _ = read(model_dir, data, limit)
    weights, bias = fit(x, right)
    cal = Calibration(tuple(float(w) for w in weights), bias, f"{Path(data).name} ({len(right)} expressions)")
    probability = np.array([cal.probability(list(f)) for f in x])
    path = Path(model_dir) / MODEL_FILE
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["confidence"] = {**cal.to_dict(), "fit": figures(probability, right)}
    write_atomic(path, (json.dumps(raw, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    click.echo(json.dumps(raw["confidence"]))


@main.command("check")
@click.argument("model_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("data")
@click.option("--limit", type=click.IntRange(min=1))
def check_command(model_dir: str, data: str, limit: int | None) -> None:
    """Measure MODEL_DIR's confidence on DATA: calibration error and the confident half's ExpRate."""
    from hmer_runtime.engine.model_spec import ModelSpec

    spec = ModelSpec.load(model_dir)
    if spec.confidence is None:
        raise click.UsageError(f"{model_dir} has no fitted confidence (run the fit command first)")
    x, right, raw = read(model_dir, data, limit)
    probability = np.array([spec.confidence.probability(list(f)) for f in x])
    click.echo(json.dumps({"data": data, "confidence": figures(probability, right),
                           "raw exp(score)": figures(raw, right)}))


if __name__ == "__main__":
    run_cli(main)
