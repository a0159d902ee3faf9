import csv
import dataclasses
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tiny import EXPRESSIONS, TINY, random_checkpoint, tiny_config

from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.errors import ModelError
from hmer_runtime.text.vocab import Vocab
from hmer_train.checkpoint import load_checkpoint, save_checkpoint
from hmer_train.config import AugmentConfig, Config, ConfigError, load_config
from hmer_train.data import BatchLoader, collate
from hmer_train.decoding import TorchDecoder, decode, rescore_r2l
from hmer_train.evaluation import evaluate
from hmer_train.models.base import HMERModel, expand_memory, resolve_architecture
from hmer_train.train import TrainingError, autocast, init_weights, load_split, lr_at, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", ["comer", "wap"])
def test_step_equals_teacher_forcing(kind):
    torch.manual_seed(0)
    model = HMERModel(TINY[kind], 20).eval()
    images = torch.rand(2, 1, 40, 90)
    mask = torch.ones(2, 40, 90, dtype=torch.bool)
    mask[1, :, 50:] = False  # a padded, narrower image
    images[1, :, :, 50:] = 0
    tokens = torch.randint(0, 20, (4, 9))
    index = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        parallel = model(images, mask, tokens, index)
        memory = expand_memory(model.encode(images, mask), index)
        state = model.init_state(memory)
        steps = []
        for t in range(tokens.shape[1]):
            logits, attention, state = model.step(tokens[:, t], state, memory)
            steps.append(logits)
    assert torch.allclose(torch.stack(steps, 1), parallel, atol=1e-4)
    assert attention.shape == (4, 3, 6) and torch.allclose(attention.sum((1, 2)), torch.ones(4), atol=1e-5)
    assert attention[1, :, 4:].abs().max() < 1e-4  # no attention on padding


@pytest.mark.parametrize("kind", ["comer", "wap"])
def test_overfits_tiny_set_to_exact_predictions(tmp_path, kind):
    cfg = tiny_config(tmp_path, kind, lr=0.003, max_steps=400, epochs=400).updated({"val_split": None})
    train(cfg, progress=False)
    ckpt = load_checkpoint(tmp_path / "out" / "last.pt")
    vocab = Vocab.from_tokens(ckpt["vocab"])
    model = HMERModel(ckpt["config"].model, len(vocab))
    model.load_state_dict(ckpt["model"])
    data = load_split(cfg, "train", progress=False)
    options = DecodeOptions(beam=1, max_len=12)
    decoder = TorchDecoder(model, vocab)
    greedy = evaluate(decoder, data, vocab, options)[0]
    beam = evaluate(decoder, data, vocab, options.with_overrides(beam=3))[0]
    assert greedy["exprate"] == 100.0, greedy
    assert beam["exprate"] == 100.0, beam
    if kind == "comer":  # trained in both directions: right-to-left rescoring keeps the right answer
        from hmer_train.data import collate

        b = collate([data.image(i) for i in range(len(data))], [[]] * len(data), data.names, vocab, False)
        hyps = decode(model, b.images, b.mask, vocab.sos_id, vocab.eos_id, beam=3, max_len=12)
        rescored = rescore_r2l(model, b.images, b.mask, hyps, vocab.sos_id, vocab.eos_id)
        assert [vocab.decode(h[0].ids) for h in rescored] == data.tokens


def _losses(path: Path) -> dict[int, float]:
    with open(path) as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def test_tensorboard_log_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(tmp_path, "wap", max_steps=2, epochs=5)
    train(cfg, progress=False)
    events = EventAccumulator(str(tmp_path / "out" / "tb"))
    events.Reload()
    assert {"train/loss", "train/lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]


def test_resume_reproduces_uninterrupted_run(tmp_path):
    full = tiny_config(tmp_path / "a", "comer", max_steps=6, epochs=100)
    full = full.updated({"model.decoder": {"dropout": 0.1},  # exercise the saved RNG state
                         "train.batch_size": 3})  # two batches per epoch: the interruption falls mid-epoch
    full = replace(full, train=replace(full.train, augment=AugmentConfig(scale=(0.8, 1.2), rotate_deg=2.0,
                                                                          stroke_jitter=0.5)))
    train(full, progress=False)
    part = full.updated({"out": str(tmp_path / "b")})
    train(part, progress=False, until_step=3)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 3
    train(part, resume=str(tmp_path / "b" / "last.pt"), progress=False)
    a, b = _losses(tmp_path / "a" / "out" / "log.csv"), _losses(tmp_path / "b" / "log.csv")
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    assert [a[s] for s in (4, 5, 6)] == [b[s] for s in (4, 5, 6)]
    ema_a = load_checkpoint(tmp_path / "a" / "out" / "last.pt")["ema"]
    ema_b = load_checkpoint(tmp_path / "b" / "last.pt")["ema"]
    assert ema_a["updates"] == ema_b["updates"] == 6
    assert all(torch.equal(ema_a["weights"][k], ema_b["weights"][k]) for k in ema_a["weights"])


def test_stop_file_ends_the_run_at_the_epoch_checkpoint_and_resume_continues(tmp_path):
    from hmer_train.train import STOP_FILE

    cfg = tiny_config(tmp_path, "comer", max_steps=5, epochs=100, batch_size=3)  # two steps an epoch
    out = Path(cfg.out)
    out.mkdir(parents=True)
    (out / STOP_FILE).touch()
    train(cfg, progress=False)
    ckpt = load_checkpoint(out / "last.pt")
    assert (ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]) == (2, 1, 0)
    assert ckpt["metrics"]  # the validated epoch-end checkpoint, not a mid-epoch one
    assert not (out / STOP_FILE).exists()  # consumed: the resumed run is not stopped again
    train(cfg, resume=str(out / "last.pt"), progress=False)
    assert load_checkpoint(out / "last.pt")["step"] == 5
    assert sorted(_losses(out / "log.csv")) == [1, 2, 3, 4, 5]


def test_ema_averages_weights_with_warm_up():
    from hmer_train.ema import ema_model

    lin = torch.nn.Linear(1, 1, bias=False)
    ema = ema_model(lin, decay=0.5)
    expected = None
    for n, w in enumerate([1.0, 2.0, 4.0, 8.0]):
        lin.weight.data.fill_(w)
        ema.update_parameters(lin)
        d = min(0.5, (1 + n) / (10 + n))  # n updates before this one
        expected = w if expected is None else d * expected + (1 - d) * w
    assert ema.module.weight.item() == pytest.approx(expected)
    assert 4.0 < expected < 8.0


def test_exported_and_evaluated_weights_are_the_moving_average(tmp_path):
    from hmer_train.checkpoint import load_model

    cfg = tiny_config(tmp_path, "comer", max_steps=3, epochs=5, lr=0.01)
    train(cfg, progress=False)
    ckpt = load_checkpoint(tmp_path / "out" / "last.pt")
    model, _, _ = load_model(tmp_path / "out" / "last.pt")
    weights = model.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in ckpt["ema"]["weights"].items())
    assert not all(torch.equal(weights[k], v) for k, v in ckpt["model"].items())
    trained = load_model(tmp_path / "out" / "last.pt", weights="trained")[0].state_dict()
    assert all(torch.equal(trained[k], v) for k, v in ckpt["model"].items())

    from hmer_train.checkpoint import slim_checkpoint

    slim_checkpoint(tmp_path / "out" / "last.pt", tmp_path / "slim.pt")
    slim = load_checkpoint(tmp_path / "slim.pt")
    assert "optimizer" not in slim and "ema" not in slim and slim["step"] == 3 and slim["averaged"]
    assert all(torch.equal(slim["model"][k], v) for k, v in ckpt["ema"]["weights"].items())
    with pytest.raises(ModelError, match="only the moving average"):
        load_model(tmp_path / "slim.pt", weights="trained")
    cfg = cfg.updated({"train.max_steps": 4})
    train(cfg, resume=str(tmp_path / "slim.pt"), progress=False)
    resumed = load_checkpoint(tmp_path / "out" / "last.pt")
    assert resumed["step"] == 4
    # Fresh AdamW moments: the learning rate warms up again (first step at 1/warmup of the schedule).
    tc = cfg.train
    assert resumed["optimizer"]["param_groups"][0]["lr"] == pytest.approx(lr_at(3, tc.max_steps, tc) / tc.warmup_steps)
    # The average goes on from the slim weights where it stood, not warmed up from scratch.
    n = slim["ema_updates"]
    assert n == 3 and resumed["ema"]["updates"] == 4
    decay = min(tc.ema, (1 + n) / (10 + n))
    for k, avg in resumed["ema"]["weights"].items():
        if avg.is_floating_point() and "running" not in k:
            want = torch.lerp(slim["model"][k], resumed["model"][k], 1 - decay)
            assert torch.allclose(avg, want, atol=1e-6), k

    cfg = tiny_config(tmp_path / "off", "comer", max_steps=3, epochs=5).updated({"train.ema": None})
    train(cfg, progress=False)
    assert "ema" not in load_checkpoint(tmp_path / "off" / "out" / "last.pt")


def test_resume_from_cli_keeps_the_checkpoint_config(tmp_path):
    """Regression: flags left out on the command line must not reset a resumed run's settings."""
    from hmer_train.cli_train import resolve_config

    cfg = tiny_config(tmp_path, "comer")
    cfg = cfg.updated({"out": str(tmp_path / "run"), "train.batch_size": 3, "train.max_pixels": 12345})
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "config": cfg, "vocab": []})
    flags = {"dataset": None, "train.batch_size": None, "train.lr": 0.01, "out": None, "train.threads": None}
    got = resolve_config(None, flags, str(tmp_path / "c.pt"))
    assert got.out == str(tmp_path / "run")
    assert (got.train.batch_size, got.train.max_pixels, got.train.lr) == (3, 12345, 0.01)
    assert got.model.decoder["d_model"] == 64 and got.model.encoder["growth"] == 8


def test_checkpoint_from_before_embed_norm_rebuilds_and_resumes_as_trained(tmp_path):
    """Checkpoints trained with the earlier embedding scheme (no ``embed_norm`` key, and the
    default has changed since) rebuild as that model; a config that does not fit is refused."""
    from hmer_train.checkpoint import load_model
    from hmer_train.cli_train import resolve_config
    from hmer_train.train import TrainingError

    cfg = tiny_config(tmp_path, "comer", max_steps=1)
    vocab = Vocab(sorted({t for e in EXPRESSIONS for t in e}))
    torch.manual_seed(0)
    old = HMERModel(cfg.updated({"model.decoder": {"embed_norm": False}}).model, len(vocab)).eval()
    assert "embed_norm" not in cfg.model.decoder
    save_checkpoint(tmp_path / "old.pt", {"model": old.state_dict(), "config": cfg, "vocab": vocab.tokens,
                                          "step": 0, "epoch": 0, "batch_in_epoch": 0, "rng": torch.get_rng_state()})
    model, _, _ = load_model(tmp_path / "old.pt")
    images, mask = torch.rand(1, 1, 32, 64), torch.ones(1, 32, 64, dtype=torch.bool)
    tokens = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(model(images, mask, tokens), old(images, mask, tokens))
    assert resolve_config(None, {}, str(tmp_path / "old.pt")).model.decoder["embed_norm"] is False
    new_arch = cfg.updated({"model.decoder": {"embed_norm": True}})
    with pytest.raises(TrainingError, match="old.pt: its weights do not fit the configured model"):
        train(new_arch, resume=str(tmp_path / "old.pt"), progress=False)


def test_ddp_gloo_across_two_nodes(tmp_path):
    """Multi-node DDP as README's "Training on several machines" runs it: one torchrun per node
    (--nnodes 2, --node_rank 0/1), here two on loopback."""
    cfg = tiny_config(tmp_path, "comer", max_steps=2, epochs=100, batch_size=2)
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg.updated({"val_split": None}).to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(r),
                               "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", "29517",
                               "-m", "hmer_train.cli_train", "--config", str(tmp_path / "c.yaml"), "--no-progress"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for r in (0, 1)]
    outputs = [n.communicate(timeout=300)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert load_checkpoint(tmp_path / "out" / "last.pt")["step"] == 2


def test_config_yaml_documents_every_default_key():
    import yaml

    documented = yaml.safe_load((ROOT / "config.yaml").read_text())
    defaults = Config().to_dict()
    # the architecture's defaults are its classes' (their signatures), written out in full
    defaults["model"] = dataclasses.asdict(resolve_architecture(Config().model))
    assert documented == defaults
    assert Config.from_dict(documented) == replace(Config(), model=resolve_architecture(Config().model))


def test_image_configs_follow_the_renders_and_the_input_scale():
    from hmer_train.config import image_configs, reading

    cfg = load_config(None, {"render.symbol_px": 20.0, "render.line_width": 2.0})
    render, pre = image_configs(cfg)
    assert (render.symbol_px, pre.symbol_px, pre.stroke_width) == (20.0, 20.0, 2.0)
    cfg = cfg.updated({"decode.input_scale": 1.25})
    read = reading(cfg)
    render, pre = read.render, read.preprocess
    assert (render.symbol_px, render.line_width, pre.symbol_px, pre.stroke_width) == (25.0, 2.5, 25.0, 2.5)
    assert image_configs(cfg)[1].symbol_px == 20.0  # training renders stay at the training size
    assert (image_configs(cfg)[0].pen, render.pen) == ("pil", "capsule")  # and the pen every runtime draws alike
    cfg = cfg.updated({"preprocess.stroke_width": 0})  # explicitly off stays off
    assert reading(cfg).preprocess.stroke_width == 0
    with pytest.raises(ConfigError, match="must be positive"):
        reading(cfg.updated({"decode.input_scale": 0}))


def test_bad_config_key_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.lrr'"):
        load_config(tmp_path / "c.yaml")
    p = subprocess.run([sys.executable, "-m", "hmer_train.cli_train", "--config", str(tmp_path / "c.yaml")],
                       capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.strip() == f"error: {tmp_path / 'c.yaml'}: unknown config key 'train.lrr'"


def test_set_overrides_any_key_with_a_yaml_value(tmp_path):
    """``hmer-train --set KEY=VALUE``: the ablations' one-change runs; ``train.augment=null`` is
    no augmentation at all, where a partial augment section keeps the recipe's other fields."""
    from hmer_train.cli_train import parse_settings

    cfg = Config().updated(parse_settings(("train.amp=none", "train.augment=null", "model.decoder.embed_norm=false",
                                           "train.lr=1e-3", "test_splits=['2014', '2016']")), "--set")
    assert (cfg.train.amp, cfg.train.augment, cfg.model.decoder["embed_norm"]) == ("none", AugmentConfig(), False)
    assert cfg.train.lr == 1e-3 and cfg.test_splits == ("2014", "2016")
    partial = Config().updated(parse_settings(("train.augment.elastic=0",)))
    assert partial.train.augment.elastic == 0 and partial.train.augment.ink and partial.train.augment.active
    for bad, message in (("train.lr", "expected KEY=VALUE"), ("train.lrr=1", "unknown config key 'train.lrr'"),
                         ("train.batch_size=[1", "invalid YAML value")):
        with pytest.raises(ConfigError, match=message):
            Config().updated(parse_settings((bad,)), "--set")
    p = subprocess.run([sys.executable, "-m", "hmer_train.cli_train", "--set", "train.warmup=5"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.strip() == "error: --set: unknown config key 'train.warmup'"


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": {}, "config": {}, "vocab": []})
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "trunc.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not an hmer checkpoint"):
        load_checkpoint(tmp_path / "other.pt")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format": "hmer-checkpoint-1", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    p = subprocess.run([sys.executable, "-m", "hmer_train.cli_eval", str(tmp_path / "trunc.pt"), str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "trunc.pt: not a readable checkpoint" in p.stderr


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {}, "config": {}, "vocab": [], "step": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"model": {}, "config": {}, "vocab": [], "step": 2})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_eval_command_on_fixture(tmp_path):
    cfg = tiny_config(tmp_path, "wap", max_steps=2, epochs=10).updated({"val_split": None})
    train(cfg, progress=False)
    out = tmp_path / "preds.jsonl"
    p = subprocess.run([sys.executable, "-m", "hmer_train.cli_eval", str(tmp_path / "out" / "last.pt"),
                        cfg.dataset, "--beam", "2", "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "ExpRate" in p.stdout and len(out.read_text().splitlines()) == len(EXPRESSIONS)
    # an --out that cannot be written is refused before anything else (here, before the data
    # source is found missing), in one line naming it
    (tmp_path / "a-file").write_text("")
    for bad in (tmp_path / "a-file" / "preds.jsonl", tmp_path / "no" / "such" / "preds.jsonl", tmp_path):
        p = subprocess.run([sys.executable, "-m", "hmer_train.cli_eval", str(tmp_path / "out" / "last.pt"),
                            str(tmp_path / "missing-data"), "--out", str(bad)], capture_output=True, text=True)
        assert p.returncode in (1, 2) and p.stdout == "" and "Traceback" not in p.stderr  # 2: click's own check
        assert str(bad) in p.stderr and "missing-data" not in p.stderr


def test_missing_dataset_error_shows_layout(tmp_path):
    p = subprocess.run([sys.executable, "-m", "hmer_train.cli_train", "--dataset", "NOPE", "--out",
                        str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 1 and "expected <root>/CROHME/" in p.stderr and p.stderr.count("\n") == 1


def test_batches_built_in_workers_equal_those_built_in_the_loop(tmp_path):
    cfg = tiny_config(tmp_path, "comer")
    data = load_split(cfg, "train", progress=False)
    vocab = Vocab.build(data.tokens)
    loader = BatchLoader(data, vocab, 2, 10**9, 0, AugmentConfig(scale=(0.8, 1.2), rotate_deg=2.0), True,
                         (256, 1024), pad_to=64)
    inline = list(loader.epoch(1, start=1))
    pooled = list(loader.epoch(1, start=1, workers=2))
    assert len(inline) == len(pooled) == len(loader) - 1
    for a, b in zip(inline, pooled):
        assert a.names == b.names and torch.equal(a.images, b.images) and torch.equal(a.inputs, b.inputs)
        assert a.images.shape[-2] % 64 == 0 and a.images.shape[-1] % 64 == 0


def test_bf16_autocast_trains_on_cpu_and_fp16_is_refused(tmp_path):
    cfg = tiny_config(tmp_path, "comer", max_steps=2, amp="bf16", workers=1)
    assert train(cfg, progress=False)["n"] == 6
    assert len(_losses(tmp_path / "out" / "log.csv")) == 2
    with pytest.raises(TrainingError, match="fp16 needs CUDA"):
        autocast("cpu", "fp16")
    with autocast("cpu", "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast("cpu", "none"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.parametrize("amp, fast, warns", [("bf16", True, False), ("bf16", False, True), ("none", False, False)])
def test_bf16_on_a_cpu_without_bf16_kernels_is_warned_about(tmp_path, monkeypatch, capsys, amp, fast, warns):
    monkeypatch.setattr("hmer_train.train.cpu_bf16_is_fast", lambda: fast)
    train(tiny_config(tmp_path, "comer", max_steps=1, amp=amp), progress=False)
    printed = capsys.readouterr().out
    assert ("--set train.amp=none" in printed) is warns
    assert ("train.amp" in printed) is warns


def test_validation_every_n_epochs_and_at_the_end(tmp_path):
    cfg = tiny_config(tmp_path, "comer", epochs=5, val_every=2, batch_size=3, keep_validated=True)
    train(cfg, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "out" / "val.csv")))
    assert [int(r["epoch"]) for r in rows] == [2, 4, 5]
    # keep_validated: each validated epoch's averaged weights, slim, at its validation step
    kept = sorted((tmp_path / "out").glob("epoch-*.pt"))
    assert [p.name for p in kept] == ["epoch-002.pt", "epoch-004.pt", "epoch-005.pt"]
    last = load_checkpoint(tmp_path / "out" / "last.pt")
    for path, row in zip(kept, rows):
        ckpt = load_checkpoint(path)
        assert "optimizer" not in ckpt and "ema" not in ckpt and ckpt["averaged"]
        assert ckpt["step"] == int(row["step"]) and round(ckpt["metrics"]["exprate"], 3) == float(row["exprate"])
    assert all(torch.equal(v, last["ema"]["weights"][k]) for k, v in load_checkpoint(kept[-1])["model"].items())
    assert all(float(r["tf_loss"]) > 0 and 0 <= float(r["tf_acc"]) <= 100 for r in rows)
    assert load_checkpoint(tmp_path / "out" / "last.pt")["metrics"]["n"] == 6


def test_teacher_forced_figures_are_the_left_to_right_training_loss(tmp_path):
    from hmer_train.train import batch_loss, teacher_forced

    cfg = tiny_config(tmp_path, "comer")
    data = load_split(cfg, "train", progress=False)
    vocab = Vocab.build(data.tokens)
    torch.manual_seed(0)
    model = HMERModel(cfg.model, len(vocab)).eval()
    got = teacher_forced(model, data, vocab, "cpu", batch_size=64)
    b = collate([data.image(i) for i in range(len(data))], [vocab.encode(t) for t in data.tokens], data.names,
                vocab, bidirectional=False)
    with torch.no_grad():
        assert got["tf_loss"] == pytest.approx(batch_loss(model, b, "cpu").item(), rel=1e-4)
        logits = model(b.images, b.mask, b.inputs, b.image_index)
    keep = b.targets >= 0
    assert got["tf_acc"] == pytest.approx(100 * (logits.argmax(-1)[keep] == b.targets[keep]).float().mean().item())
    assert teacher_forced(model, data, vocab, "cpu", limit=2)["tf_loss"] != got["tf_loss"]


def test_checkpoints_from_before_the_typed_config_load_and_resume(tmp_path):
    """Configs stored before ``Config`` existed: keys added since are left out, the encoder has no
    ``type``, ``train.augment`` names only the fields it had. They load as a Config, keep every
    value they hold, and a run resumes from them."""
    cfg = tiny_config(tmp_path, "comer", max_steps=2, epochs=100)
    old = cfg.to_dict()
    for section, key in (("train", "pad_to"), ("train", "workers"), ("train", "val_every"),
                         ("preprocess", "as_given"), ("decode", "search")):
        del old[section][key]
    old["model"]["encoder"].pop("type", None)
    old["train"]["augment"] = {"scale": [0.8, 1.2], "rotate_deg": 2.0}
    vocab = Vocab(sorted({t for e in EXPRESSIONS for t in e}))
    model = HMERModel(old["model"], len(vocab))
    save_checkpoint(tmp_path / "old.pt", {"model": model.state_dict(), "config": old, "vocab": vocab.tokens,
                                          "step": 1, "epoch": 0, "batch_in_epoch": 1, "rng": torch.get_rng_state()})
    got = load_checkpoint(tmp_path / "old.pt")["config"]
    assert isinstance(got, Config) and got.train.lr == cfg.train.lr and got.render == cfg.render
    assert got.train.augment == AugmentConfig(scale=(0.8, 1.2), rotate_deg=2.0)  # fields it lacked: off
    assert (got.train.pad_to, got.decode.search, got.preprocess.as_given) == (16, "hmer", False)
    train(got, resume=str(tmp_path / "old.pt"), progress=False)
    resumed = load_checkpoint(Path(got.out) / "last.pt")
    assert resumed["step"] == 2 and resumed["config"].model.encoder["type"] == "densenet"


@pytest.mark.parametrize("path", ["models/cpu-v3/last.pt"])
def test_committed_run_checkpoints_load_with_their_own_config(path):
    raw = torch.load(ROOT / path, map_location="cpu", weights_only=True)["config"]
    cfg = load_checkpoint(ROOT / path)["config"]
    stored = cfg.to_dict()
    for section in ("render", "preprocess"):
        assert stored[section] == {**stored[section], **raw[section]}
    assert {k: stored["train"][k] for k in raw["train"] if k != "augment"} == \
        {k: v for k, v in raw["train"].items() if k != "augment"}
    from hmer_train.checkpoint import load_model

    model, _, _ = load_model(ROOT / path)
    assert model.arch.encoder["growth"] == raw["model"]["encoder"]["growth"]


def test_init_starts_a_new_run_from_the_weights_that_fit(tmp_path):
    source = random_checkpoint(tmp_path, "comer", seed=3)
    weights = load_checkpoint(source)["model"]
    wider = tiny_config(tmp_path / "b", "comer", max_steps=2).updated(
        {"model.decoder": {"ffn": 256}, "init": str(source), "val_split": None})
    model = HMERModel(wider.model, len(load_checkpoint(source)["vocab"]))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    taken = init_weights(model, weights)
    own = model.state_dict()
    changed_shape = [k for k in own if k in weights and own[k].shape != weights[k].shape]
    assert changed_shape and taken == len([k for k in own if k in weights]) - len(changed_shape)
    assert all(torch.equal(own[k], fresh[k]) for k in changed_shape)  # kept their own initialisation
    assert all(torch.equal(own[k], weights[k]) for k in own if k in weights and k not in changed_shape)
    train(wider, progress=False)
    ckpt = load_checkpoint(tmp_path / "b" / "out" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["vocab"] == load_checkpoint(source)["vocab"]
    assert sorted(_losses(tmp_path / "b" / "out" / "log.csv")) == [1, 2]  # a new run: steps from 1
