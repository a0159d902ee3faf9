"""Tiny model configurations and checkpoints for tests (seconds on a CPU)."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import torch
from synth import write_inkml_set

from hmer_runtime.text.vocab import Vocab
from hmer_train.checkpoint import save_checkpoint
from hmer_train.config import Config, ModelConfig, load_config
from hmer_train.models.base import HMERModel

TINY = {
    "comer": {"encoder": {"growth": 8, "depth": 2},
              "decoder": {"type": "comer", "d_model": 64, "heads": 4, "layers": 2, "ffn": 128, "dropout": 0.0}},
    "wap": {"encoder": {"growth": 8, "depth": 2},
            "decoder": {"type": "wap", "embed": 64, "hidden": 64, "attention": 64, "coverage_channels": 8,
                        "dropout": 0.0}},
}
EXPRESSIONS = [list("1+2"), list("x=7"), list("4-y"), list("3x"), list("2=0"), list("y+1")]


def tiny_config(tmp_path: Path, kind: str, **train) -> Config:
    """A config training ``kind`` on six synthetic expressions written under ``tmp_path``."""
    data = tmp_path / "data"
    if not data.exists():
        write_inkml_set(data, EXPRESSIONS)
    overrides = {"dataset": str(data), "val_split": "val", "out": str(tmp_path / "out"),
                 "cache_dir": str(tmp_path / "cache"), "render.symbol_px": 16.0, "render.line_width": 2.0,
                 "train.augment": {}, "train.batch_size": 8, "train.warmup_steps": 5, "train.log_every": 1,
                 "train.threads": 1, "decode.max_len": 12}
    overrides.update({f"train.{k}": v for k, v in train.items()})
    return replace(load_config(None, overrides), model=ModelConfig(**copy.deepcopy(TINY[kind])))


def random_checkpoint(tmp_path: Path, kind: str, seed: int = 0) -> Path:
    """An untrained (random-weight) tiny checkpoint: enough to test export and decoding parity."""
    cfg = tiny_config(tmp_path, kind)
    vocab = Vocab(sorted({t for e in EXPRESSIONS for t in e}))
    torch.manual_seed(seed)
    model = HMERModel(cfg.model, len(vocab))
    path = tmp_path / f"{kind}.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg, "vocab": vocab.tokens, "step": 0,
                           "epoch": 0, "metrics": {}})
    return path
