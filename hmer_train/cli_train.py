"""``hmer-train``: train a model from config.yaml, flags overriding the file."""

from __future__ import annotations

import click

from hmer_runtime.cli_util import CONTEXT_SETTINGS, run_cli
from hmer_train.config import Config


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--dataset", help="Dataset name (CROHME, HME100K) or path.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config (see config.yaml).")
@click.option("--model", "model_type", type=click.Choice(["wap", "comer"]), help="Decoder type.")
@click.option("--batch-size", type=int, help="Most images per batch.")
@click.option("--lr", type=float, help="Peak learning rate.")
@click.option("--epochs", type=int)
@click.option("--max-steps", type=int, help="Stop after this many optimiser steps.")
@click.option("--out", type=click.Path(file_okay=False), help="Checkpoint folder.")
@click.option("--resume", type=click.Path(dir_okay=False), help="Continue exactly from this checkpoint.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]))
@click.option("--threads", type=int, help="CPU threads for torch.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs still go to OUT/log.csv).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(dataset, config_path, model_type, batch_size, lr, epochs, max_steps, out, resume, device, threads,
         no_progress, debug) -> None:
    """Train an hmer model (DenseNet encoder + WAP or CoMER-style decoder).

    To end a run cleanly, create the file OUT/stop: it stops after the current epoch's validation
    and checkpoint, and --resume OUT/last.pt continues from there.
    """
    from hmer_train.train import train

    overrides = {"dataset": dataset, "train.batch_size": batch_size, "train.lr": lr, "train.epochs": epochs,
                 "train.max_steps": max_steps, "out": out, "device": device, "train.threads": threads}
    if model_type:
        overrides["model.decoder"] = {"type": model_type}
    cfg = resolve_config(config_path, overrides, resume)
    import torch

    try:
        train(cfg, resume=resume, progress=not no_progress)
    except torch.cuda.OutOfMemoryError as e:
        from hmer_train.train import TrainingError

        tc = cfg.train
        raise TrainingError("GPU", f"out of memory at batch_size {tc.batch_size}, max_pixels {tc.max_pixels}: "
                            "lower --batch-size or train.max_pixels and raise train.accumulate to keep the "
                            "effective batch") from e


def resolve_config(config_path: str | None, overrides: dict, resume: str | None) -> Config:
    """The run's config: the file (or defaults) with CLI flags on top; resuming without --config
    continues with the checkpoint's own config, changed only by the flags actually given."""
    from hmer_train.config import load_config

    overrides = {k: v for k, v in overrides.items() if v is not None}
    if resume and not config_path:
        from hmer_train.checkpoint import load_checkpoint

        return load_checkpoint(resume)["config"].updated(overrides)
    return load_config(config_path, overrides)


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
