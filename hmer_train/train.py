"""The training loop, top to bottom: setup, data, model and resume, one epoch, validation and checkpoints.

Runs single-process or under ``torchrun --nproc_per_node N`` (DDP; gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.profiler import record_function
from tqdm import tqdm

from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.errors import DatasetError, HmerError
from hmer_runtime.inputs.sources import resolve_split
from hmer_runtime.text.metrics import format_summary
from hmer_runtime.text.vocab import Vocab
from hmer_train.checkpoint import load_checkpoint, save_checkpoint, slimmed
from hmer_train.config import Config, TrainConfig, image_configs
from hmer_train.data import Batch, BatchLoader, collate
from hmer_train.decoding import TorchDecoder
from hmer_train.ema import ema_model, ema_state, load_ema_state
from hmer_train.evaluation import evaluate
from hmer_train.models.base import HMERModel
from hmer_train.prepared import DEFAULT_CACHE, PreparedSet, prepare

STOP_FILE = "stop"  # create OUT/stop to end the run after the current epoch's validation and checkpoint


class TrainingError(HmerError):
    pass


def load_split(cfg: Config, split: str, progress: bool = True) -> PreparedSet:
    src = resolve_split(cfg.dataset, split, list(cfg.data_roots))
    return prepare(src, *image_configs(cfg), cfg.cache_dir or DEFAULT_CACHE, progress=progress)


def init_weights(model: torch.nn.Module, weights: dict) -> int:
    """Copy the tensors of ``weights`` whose name and shape fit ``model``; returns how many."""
    own = model.state_dict()
    fit = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(fit, strict=False)
    return len(fit)


def lr_at(step: int, total: int, tc: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 1 % of the peak."""
    peak, warm = tc.lr, tc.warmup_steps
    if step < warm:
        return peak * (step + 1) / warm
    frac = min(1.0, (step - warm) / max(1, total - warm))
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * frac)))


def autocast(device: str, amp: str):
    """The autocast context of ``train.amp`` (bf16, fp16 or none) on ``device``: bf16 runs on CUDA
    and on CPUs (oneDNN uses AVX512_BF16/AMX where present); fp16 needs CUDA."""
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    if amp not in ("bf16", "fp16", "none", None):
        raise TrainingError("train.amp", f"must be bf16, fp16 or none, not {amp!r}")
    if amp == "fp16" and kind == "cpu":
        raise TrainingError("train.amp", "fp16 needs CUDA; use bf16 on a CPU")
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device_type=kind, dtype=dtype, enabled=amp in ("bf16", "fp16"))


def cpu_bf16_is_fast() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (AVX-512 or AMX). Without them bf16 autocast is
    emulated and several times slower than fp32 (docs/BENCHMARKS.md)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN: nothing to tell
        return True


def batch_loss(model: torch.nn.Module, batch: Batch, device: str, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean teacher-forced cross-entropy per target token of ``batch`` (both directions when the
    batch holds them); logits are upcast so the loss is computed in fp32 under autocast."""
    pin = str(device).startswith("cuda")
    images, mask = batch.images.to(device, non_blocking=pin), batch.mask.to(device, non_blocking=pin)
    logits = model(images, mask, batch.inputs.to(device), batch.image_index.to(device))
    return F.cross_entropy(logits.float().flatten(0, 1), batch.targets.to(device).flatten(), ignore_index=-1,
                           label_smoothing=label_smoothing)


def forward_backward(model: torch.nn.Module, batch: Batch, device: str, tc: TrainConfig,
                     scaler: torch.amp.GradScaler) -> torch.Tensor:
    """The teacher-forced loss of ``batch`` under ``train.amp``; when it is finite, its gradient
    (over ``train.accumulate``) is added to the weights' ``.grad``. Returns the loss."""
    with record_function("forward + loss"), autocast(device, tc.amp):
        loss = batch_loss(model, batch, device, tc.label_smoothing)
    if torch.isfinite(loss):
        with record_function("backward"):
            scaler.scale(loss / tc.accumulate).backward()
    return loss


def optimizer_step(model: torch.nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, lr: float,
                   grad_clip: float) -> None:
    """One AdamW update at ``lr`` from the accumulated gradients, clipped to ``grad_clip`` in norm."""
    with record_function("clip + AdamW"):
        for g in opt.param_groups:
            g["lr"] = lr
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)


@torch.no_grad()
def teacher_forced(model: HMERModel, data: PreparedSet, vocab: Vocab, device: str, limit: int | None = None,
                   batch_size: int = 16, max_pixels: int = 2_000_000) -> dict:
    """Teacher-forced cross-entropy per token and next-token accuracy (%) of ``model`` reading
    left to right on ``data``: a quick, smooth signal for comparing short runs at equal steps."""
    from hmer_train.data import make_batches

    model.eval()
    n = len(data) if limit is None else min(limit, len(data))
    sub = data.select(range(n)) if n < len(data) else data
    ids = [vocab.encode(t) for t in sub.tokens]
    loss = correct = tokens = 0.0
    for idx in make_batches(sub.shapes, batch_size, max_pixels):
        b = collate([sub.image(i) for i in idx], [ids[i] for i in idx], [sub.names[i] for i in idx], vocab, False)
        logits = model(b.images.to(device), b.mask.to(device), b.inputs.to(device), b.image_index.to(device)).float()
        target = b.targets.to(device)
        keep = target >= 0
        loss += F.cross_entropy(logits[keep], target[keep], reduction="sum").item()
        correct += (logits.argmax(-1)[keep] == target[keep]).sum().item()
        tokens += keep.sum().item()
    return {"tf_loss": loss / max(tokens, 1), "tf_acc": 100.0 * correct / max(tokens, 1)}


# --- the run, in named steps: setup, data, model and resume, one epoch, validate and checkpoint ---


@dataclass
class Process:
    """Where this process trains: its device, and its rank among ``world`` processes (DDP)."""

    device: str
    rank: int = 0
    world: int = 1
    distributed: bool = False

    @property
    def master(self) -> bool:
        return self.rank == 0


@dataclass
class Data:
    """The training set (the split's own ``real`` samples first, then ``train_extra``'s) and the
    validation set (None when the dataset has no such split)."""

    train: PreparedSet
    real: int
    too_long: int
    val: PreparedSet | None


@dataclass
class Run:
    """The model, its optimiser and everything that moves while training: what a checkpoint saves
    and a resume restores."""

    cfg: Config
    vocab: Vocab
    model: torch.nn.Module  # DistributedDataParallel around ``raw_model`` under DDP
    raw_model: HMERModel
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: torch.nn.Module | None
    loader: BatchLoader
    per_epoch: int
    total: int
    out: Path
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float = -1.0
    rewarm_from: int | None = None  # the step a slim checkpoint resumed at (see resume_from)
    skipped_nonfinite: int = 0
    tb: Any = None

    def checkpoint(self, name: str, metrics: dict | None = None, slim: bool = False) -> None:
        """Write OUT/``name`` atomically: the full state, or with ``slim`` the weights only."""
        tc = self.cfg.train
        state = {
            "model": self.raw_model.state_dict(), "optimizer": self.opt.state_dict(), "step": self.step,
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "rng": torch.get_rng_state(),
            "config": self.cfg, "vocab": self.vocab.tokens, "metrics": metrics or {}, "best": self.best,
            "scheduler": {"kind": "warmup-cosine", "total": self.total, "warmup": tc.warmup_steps},
            **({"ema": ema_state(self.ema)} if self.ema is not None else {}),
        }
        save_checkpoint(self.out / name, slimmed(state) if slim else state)


def setup(cfg: Config) -> Process:
    """Join the process group under torchrun, pick the device and the CPU threads."""
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("nccl" if cfg.device == "cuda" else "gloo")
    device = cfg.device
    if device == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda", "CUDA is not available on this machine")
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    if cfg.train.threads:
        torch.set_num_threads(int(cfg.train.threads))
    if not distributed:
        return Process(device)
    return Process(device, dist.get_rank(), dist.get_world_size(), True)


def load_data(cfg: Config, progress: bool) -> Data:
    """The prepared training set (expressions over ``train.max_tokens`` left out) and validation set."""
    tc = cfg.train
    train_set = load_split(cfg, cfg.train_split, progress)
    real = len(train_set)  # the split's own samples come first; train_extra's follow
    for extra in cfg.train_extra:
        more = prepare(os.path.expanduser(extra), *image_configs(cfg), cfg.cache_dir or DEFAULT_CACHE,
                       progress=progress)
        train_set = train_set.concat(more)
    if len(train_set) == 0:
        raise DatasetError(f"{cfg.dataset}:{cfg.train_split}", "no usable training samples")
    too_long = sum(len(t) + 1 > tc.max_tokens for t in train_set.tokens)
    if too_long:
        keep = [i for i, t in enumerate(train_set.tokens) if len(t) + 1 <= tc.max_tokens]
        real = sum(i < real for i in keep)
        train_set = train_set.select(keep)
    try:
        val_set = load_split(cfg, cfg.val_split, progress) if cfg.val_split else None
    except DatasetError:
        val_set = None
    return Data(train_set, real, too_long, val_set)


def report_data(cfg: Config, data: Data, vocab: Vocab, device: str) -> None:
    """What the run trains on, and the warnings worth reading before hours are spent."""
    tc = cfg.train
    print(f"train: {len(data.train)} expressions ({data.real} of {cfg.train_split}; {len(data.train.errors)} "
          f"unreadable, {data.too_long} over {tc.max_tokens} tokens skipped); "
          f"val: {len(data.val) if data.val else 0}; vocab {len(vocab)}")
    if tc.amp == "bf16" and not str(device).startswith("cuda") and not cpu_bf16_is_fast():
        print("warning: train.amp is bf16 but this CPU has no bf16 kernels (AVX-512 or AMX), so "
              "autocast is emulated and several times slower than fp32; --set train.amp=none trains "
              "in fp32 instead")
    if data.val is not None:
        unknown = vocab.unknown_symbols(data.val.tokens)
        if unknown:
            print("val symbols not in vocab: " + ", ".join(f"{t} ({c})" for t, c in unknown.most_common()))


def build_run(cfg: Config, data: Data, vocab: Vocab, proc: Process) -> Run:
    """A fresh model (seeded), its AdamW optimiser and the batch loader of this rank."""
    tc = cfg.train
    torch.manual_seed(tc.seed)
    model = HMERModel(cfg.model, len(vocab)).to(proc.device)
    cfg = replace(cfg, model=model.arch)  # checkpoints record the architecture in full
    # oneDNN/cuDNN run the DenseNet's convolutions faster channels-last (docs/BENCHMARKS.md);
    # only the memory layout changes.
    model.encoder.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    loader = BatchLoader.for_run(data.train, vocab, cfg, proc.rank, proc.world, real=data.real)
    per_epoch = max(1, len(loader) // tc.accumulate)
    return Run(cfg, vocab, model, model, opt, torch.amp.GradScaler(enabled=tc.amp == "fp16"), None, loader,
               per_epoch, tc.max_steps or tc.epochs * per_epoch, Path(cfg.out))


def resume_from(run: Run, ckpt: dict | None, init: dict | None, resume: str | None, master: bool) -> None:
    """Start from ``init``'s fitting weights, or continue ``ckpt`` exactly: weights, optimiser,
    position in the epoch, RNG and the weights' moving average (``train.ema``)."""
    tc = run.cfg.train
    if init is not None:
        taken = init_weights(run.raw_model, init["model"])
        if master:
            print(f"init: {taken} of {len(run.raw_model.state_dict())} tensors from {run.cfg.init} "
                  f"(step {init['step']})")
    if ckpt:
        try:
            run.raw_model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            detail = str(e).splitlines()[0][:120]
            raise TrainingError(str(resume), "its weights do not fit the configured model; resume without "
                                f"--config to continue with the checkpoint's own ({detail})") from e
        run.step, run.epoch, run.batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        if "optimizer" in ckpt:
            run.opt.load_state_dict(ckpt["optimizer"])
        else:  # a slimmed checkpoint (see slim_checkpoint): weights and position only
            # Fresh AdamW moments make the first updates about lr per weight whatever the gradient,
            # so the learning rate warms up again rather than jolting converged weights.
            run.rewarm_from = run.step
            print(f"checkpoint has no optimizer state: AdamW moments restart from zero, learning rate "
                  f"re-warmed over {tc.warmup_steps} steps")
        run.best = ckpt.get("best", -1.0)
        torch.set_rng_state(ckpt["rng"])
    # Validation, best.pt selection and export use the weights' moving average when train.ema is set.
    run.ema = ema_model(run.raw_model, tc.ema) if tc.ema else None
    if run.ema is not None and ckpt and "ema" in ckpt:
        load_ema_state(run.ema, ckpt["ema"])
    elif run.ema is not None and ckpt and ckpt.get("averaged"):
        # A slim checkpoint's weights are already the average: keep averaging at the full decay
        # instead of warming up again, which would let the jolted first steps dominate it.
        run.ema.n_averaged.fill_(max(1, int(ckpt.get("ema_updates", ckpt["step"]))))


def prepare_out(run: Run, resumed: bool) -> None:
    """OUT ready for this run: partial writes of a killed run removed, and the log rows it wrote
    after its last checkpoint dropped (they are about to be logged again)."""
    run.out.mkdir(parents=True, exist_ok=True)
    for stale in run.out.glob(".*.tmp"):  # a checkpoint write cut off by a kill (save_checkpoint)
        stale.unlink(missing_ok=True)
    if resumed:
        for name in ("log.csv", "val.csv"):
            _truncate_log(run.out / name, run.step)
    run.tb = _tensorboard(run.out)


def train_epoch(run: Run, proc: Process, stop: int, bar: tqdm) -> None:
    """Optimiser steps until the epoch ends or ``stop`` is reached (then the epoch stays open, to
    be resumed at the next batch); logs and writes last.pt every ``train.log_every`` steps."""
    tc = run.cfg.train
    run.model.train()
    t0, seen, micro = time.time(), 0, 0
    for batch in run.loader.epoch(run.epoch, start=run.batch_in_epoch * tc.accumulate, workers=tc.workers,
                                  pin_memory=proc.device.startswith("cuda")):
        loss = forward_backward(run.model, batch, proc.device, tc, run.scaler)
        if not torch.isfinite(loss):
            run.skipped_nonfinite += 1
            run.opt.zero_grad(set_to_none=True)
            if run.skipped_nonfinite > 10:
                raise TrainingError("training", f"loss was NaN/inf {run.skipped_nonfinite} times; lower the "
                                    "learning rate or check the data")
            continue
        micro += 1
        seen += batch.images.shape[0]
        if micro % tc.accumulate:
            continue
        lr = lr_at(run.step, run.total, tc)
        if run.rewarm_from is not None:
            lr *= min(1.0, (run.step - run.rewarm_from + 1) / max(1, tc.warmup_steps))
        optimizer_step(run.model, run.opt, run.scaler, lr, tc.grad_clip)
        if run.ema is not None:
            run.ema.update_parameters(run.raw_model)
        run.step += 1
        run.batch_in_epoch += 1
        rate = seen * proc.world / max(1e-9, time.time() - t0)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{rate:.1f}", epoch=run.epoch)
        if proc.master and (run.step % tc.log_every == 0 or run.step == run.total):
            _log(run.out / "log.csv", {"step": run.step, "epoch": run.epoch, "loss": round(loss.item(), 5),
                                       "lr": lr, "images_per_s": round(rate, 2), "time": round(time.time(), 1)},
                 run.tb, "train/")
            run.checkpoint("last.pt")
        if run.step >= stop and run.batch_in_epoch < run.per_epoch:  # at the epoch's end, close the epoch
            return
    run.epoch, run.batch_in_epoch = run.epoch + 1, 0


def validate(run: Run, val_set: PreparedSet, device: str) -> dict:
    """Greedy, unconstrained ExpRate (so the curve shows the model alone) and teacher-forced
    figures of the judged weights (the moving average where kept) on ``train.val_max`` expressions."""
    tc = run.cfg.train
    # Cap decoding near the longest reference so an untrained model's endless output doesn't
    # dominate the epoch; reported test figures use hmer-eval's full max_len.
    cap = max(len(t) for t in val_set.tokens) + 10
    judged = run.ema.module if run.ema is not None else run.raw_model
    sizes = {"batch_size": max(16, tc.batch_size), "max_pixels": max(2_000_000, tc.max_pixels)}
    options = DecodeOptions(beam=1, max_len=cap, grammar=False, rescore=False)
    summary = evaluate(TorchDecoder(judged, run.vocab), val_set, run.vocab, options, tc.val_max, **sizes)[0]
    summary.update(teacher_forced(judged, val_set, run.vocab, device, tc.val_max, **sizes))
    tqdm.write(f"epoch {run.epoch} step {run.step} val {format_summary(summary)} | teacher-forced loss "
               f"{summary['tf_loss']:.3f} token acc {summary['tf_acc']:.2f}")
    _log(run.out / "val.csv", {"step": run.step, "epoch": run.epoch, "exprate": round(summary["exprate"], 3),
                               "le1": round(summary["le1"], 3), "le2": round(summary["le2"], 3),
                               "wer": round(summary["wer"], 3), "tf_loss": round(summary["tf_loss"], 4),
                               "tf_acc": round(summary["tf_acc"], 3), "time": round(time.time(), 1)},
         run.tb, "val/")
    return summary


def save_epoch(run: Run, metrics: dict) -> None:
    """last.pt after every epoch; a slim epoch-NNN.pt of each validated one (``train.keep_validated``;
    averaging the last few smooths the swings between single checkpoints, docs/MODEL.md); best.pt
    when validation improved."""
    run.checkpoint("last.pt", metrics)
    if metrics and run.cfg.train.keep_validated:
        run.checkpoint(f"epoch-{run.epoch:03d}.pt", metrics, slim=True)
    if metrics and metrics["exprate"] > run.best:
        run.best = metrics["exprate"]
        run.checkpoint("best.pt", metrics)
    elif not (run.out / "best.pt").exists():
        run.checkpoint("best.pt", metrics)


def train(cfg: Config, resume: str | None = None, progress: bool = True, until_step: int | None = None) -> dict:
    """Train per ``cfg``; returns the last validation summary. Checkpoints go to ``cfg.out``.

    ``until_step`` stops early as an interruption would (the schedule still spans the full run),
    which is how a run is trained in fixed slices and how the resume test interrupts.
    """
    tc = cfg.train
    proc = setup(cfg)
    data = load_data(cfg, progress and proc.master)
    ckpt = load_checkpoint(resume) if resume else None
    init = load_checkpoint(cfg.init) if cfg.init and not ckpt else None
    vocab = Vocab.from_tokens((ckpt or init)["vocab"]) if ckpt or init else Vocab.build(data.train.tokens)
    if proc.master:
        report_data(cfg, data, vocab, proc.device)

    run = build_run(cfg, data, vocab, proc)
    resume_from(run, ckpt, init, resume, proc.master)
    if proc.distributed:
        run.model = torch.nn.parallel.DistributedDataParallel(run.raw_model)
    if proc.master:
        prepare_out(run, resumed=bool(ckpt))

    summary: dict = {}
    stop = min(run.total, until_step or run.total)
    bar = tqdm(total=stop, initial=run.step, disable=not (progress and proc.master), unit="step", dynamic_ncols=True)
    while run.step < stop and run.epoch < tc.epochs:
        train_epoch(run, proc, stop, bar)
        due = run.epoch % tc.val_every == 0 or run.epoch >= tc.epochs or run.step >= run.total
        if proc.master:
            metrics = validate(run, data.val, proc.device) if due and data.val is not None and len(data.val) else {}
            summary = metrics or summary
            save_epoch(run, metrics)
        if run.step < stop and _stop_requested(run.out, proc.master, proc.distributed):
            if proc.master:
                tqdm.write(f"{run.out / STOP_FILE} found: stopped after epoch {run.epoch} at step {run.step}; "
                           f"continue with --resume {run.out / 'last.pt'}")
            break
    bar.close()
    if proc.distributed:
        dist.barrier()
        dist.destroy_process_group()
    if run.skipped_nonfinite and proc.master:
        print(f"skipped {run.skipped_nonfinite} batches with non-finite loss")
    return summary


def _stop_requested(out: Path, master: bool, distributed: bool) -> bool:
    """Whether OUT/stop exists (the master's view, shared with every rank); consumes the file.

    A caller asks for a stop this way and waits for the run to exit, so the run ends
    on a validated epoch checkpoint instead of being killed a few steps past it.
    """
    flag = [master and (out / STOP_FILE).exists()]
    if distributed:
        dist.broadcast_object_list(flag, src=0)
    if flag[0] and master:
        (out / STOP_FILE).unlink(missing_ok=True)
    return bool(flag[0])


def _tensorboard(out: Path):
    """A TensorBoard writer under OUT/tb when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tb"))


def _truncate_log(path: Path, step: int) -> None:
    """Drop the rows of a CSV log after ``step`` (rewritten atomically), so a resumed run's log
    has each step once."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    keep = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
    if len(keep) == len(rows):
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(keep)
    os.replace(tmp, path)


def _log(path: Path, row: dict, tb=None, prefix: str = "") -> None:
    """Append ``row`` to a CSV log (and its numbers to TensorBoard, keyed by step)."""
    if tb is not None:
        for k, v in row.items():
            if k not in ("step", "time", "epoch") and isinstance(v, (int, float)):
                tb.add_scalar(f"{prefix}{k}", v, row["step"])
        tb.flush()
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)
