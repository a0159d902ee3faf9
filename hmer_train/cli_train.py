"""``hmer-train``: train a model from config.yaml, flags overriding the file."""

from __future__ import annotations

import re

import click

from hmer_runtime.cli_util import CONTEXT_SETTINGS, run_cli
from hmer_train.config import Config


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--dataset", help="Dataset name (CROHME, HME100K) or path.")
@click.option("--extra", "extra", multiple=True, metavar="PATH",
              help="More training data, added to the dataset's training split: an InkML folder or archive "
                   "(e.g. hmer-data synth's output; repeatable).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config (see config.yaml).")
@click.option("--model", "model_type", type=click.Choice(["wap", "comer"]), help="Decoder type.")
@click.option("--batch-size", type=int, help="Most images per batch.")
@click.option("--lr", type=float, help="Peak learning rate.")
@click.option("--epochs", type=int)
@click.option("--max-steps", type=int, help="Stop after this many optimiser steps.")
@click.option("--out", type=click.Path(file_okay=False), help="Checkpoint folder.")
@click.option("--resume", type=click.Path(dir_okay=False), help="Continue exactly from this checkpoint.")
@click.option("--init", "init", type=click.Path(dir_okay=False),
              help="Start a new run from this checkpoint's weights (those that fit the configured model).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]))
@click.option("--threads", type=int, help="CPU threads for torch.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Any config key, dotted, with a YAML value: --set train.amp=none --set train.augment=null "
                   "(repeatable; applied after the flags above).")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs still go to OUT/log.csv).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(dataset, extra, config_path, model_type, batch_size, lr, epochs, max_steps, out, resume, init, device, threads,
         settings, no_progress, debug) -> None:
    """Train an hmer model (DenseNet encoder + WAP or CoMER-style decoder).

    To end a run cleanly, create the file OUT/stop: it stops after the current epoch's validation
    and checkpoint, and --resume OUT/last.pt continues from there.
    """
    from hmer_train.train import train

    overrides = {"dataset": dataset, "train.batch_size": batch_size, "train.lr": lr, "train.epochs": epochs,
                 "train.max_steps": max_steps, "out": out, "device": device, "train.threads": threads,
                 "train_extra": list(extra) or None, "init": init}
    if model_type:
        overrides["model.decoder"] = {"type": model_type}
    cfg = resolve_config(config_path, overrides, resume).updated(parse_settings(settings), "--set")
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


SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_settings(settings: tuple[str, ...]) -> dict:
    """``--set KEY=VALUE`` pairs as dotted overrides, each value read as YAML (null included)."""
    import yaml

    from hmer_train.config import ConfigError

    out = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", f"expected KEY=VALUE, not {item!r}")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError("--set", f"{key.strip()}: invalid YAML value {value!r} ({e})") from e
        if isinstance(parsed, str) and SCIENTIFIC.fullmatch(parsed):
            parsed = float(parsed)  # YAML 1.1 reads 1e-3 as a string; nobody means that here
        out[key.strip()] = parsed
    return out


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
