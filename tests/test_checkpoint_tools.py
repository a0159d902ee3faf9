"""hmer-checkpoint: averaging several checkpoints into one slim checkpoint, and slimming one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import random_checkpoint

from hmer_runtime.errors import ModelError
from hmer_train.checkpoint import average_checkpoints, load_checkpoint, load_model, save_checkpoint

BIN = Path(sys.executable).parent


def _checkpoint(tmp_path: Path, name: str, seed: int, step: int, kind: str = "comer") -> Path:
    path = random_checkpoint(tmp_path / name, kind, seed=seed)
    ckpt = torch.load(path, weights_only=True)
    ckpt.update(step=step, epoch=step // 10, metrics={"exprate": float(seed)})
    # A BatchNorm counter that differs per checkpoint: the average keeps the newest one's.
    counter = next(k for k in ckpt["model"] if k.endswith("num_batches_tracked"))
    ckpt["model"][counter] = torch.tensor(step)
    save_checkpoint(path, ckpt)
    return path


def test_average_is_the_mean_of_the_weights_at_the_newest_step(tmp_path):
    newest, older = _checkpoint(tmp_path, "b", seed=1, step=40), _checkpoint(tmp_path, "a", seed=0, step=20)
    out = tmp_path / "avg.pt"
    average_checkpoints([newest, older], out)  # in any order

    avg, a, b = (load_checkpoint(p) for p in (out, older, newest))
    assert avg["step"] == 40 and avg["epoch"] == 4 and avg["averaged"]
    assert avg["averaged_from"] == [{"step": 20, "epoch": 2}, {"step": 40, "epoch": 4}]
    assert "metrics" not in avg and "optimizer" not in avg  # measured on other weights
    for k, v in avg["model"].items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (a["model"][k] + b["model"][k]) / 2)
        else:
            assert torch.equal(v, b["model"][k])
    model, vocab, ckpt = load_model(out)  # loads and runs as any slim checkpoint
    assert model(torch.rand(1, 1, 32, 48), torch.ones(1, 32, 48, dtype=torch.bool),
                 torch.zeros(1, 3, dtype=torch.long)).shape[:2] == (1, 3)
    from hmer_export.exporter import describe
    from hmer_train.config import reading

    source = describe(model, vocab, ckpt, out, reading(ckpt["config"]), {}, 17)["checkpoint"]  # what model.json records
    assert source["step"] == 40 and [s["step"] for s in source["averaged_from"]] == [20, 40]


def test_average_refuses_different_models(tmp_path):
    comer, wap = _checkpoint(tmp_path, "c", 0, 10), _checkpoint(tmp_path, "w", 1, 20, kind="wap")
    with pytest.raises(ModelError, match="same architecture") as e:
        average_checkpoints([wap, comer], tmp_path / "avg.pt")  # wap is the newest: comer differs from it
    assert str(comer) in str(e.value) and str(wap) not in str(e.value)
    with pytest.raises(ValueError, match="at least two"):
        average_checkpoints([comer], tmp_path / "avg.pt")
    assert not (tmp_path / "avg.pt").exists()


def test_cli_average_and_slim(tmp_path):
    a, b = _checkpoint(tmp_path, "a", 0, 10), _checkpoint(tmp_path, "b", 1, 20)
    run = [str(BIN / "hmer-checkpoint")]
    p = subprocess.run([*run, "average", str(tmp_path / "avg.pt"), str(a), str(b)], capture_output=True, text=True)
    assert p.returncode == 0 and "steps 10, 20" in p.stdout
    assert load_checkpoint(tmp_path / "avg.pt")["averaged_from"][1]["step"] == 20

    missing = tmp_path / "nope.pt"
    p = subprocess.run([*run, "average", str(tmp_path / "x.pt"), str(a), str(missing)], capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [f"error: {missing}: checkpoint not found"]
    assert not (tmp_path / "x.pt").exists()

    p = subprocess.run([*run, "slim", str(b), str(tmp_path / "slim.pt")], capture_output=True, text=True)
    assert p.returncode == 0 and load_checkpoint(tmp_path / "slim.pt")["step"] == 20
