"""The training loop, top to bottom: data, model, optimiser, resume, steps, validation, checkpoints.

Runs single-process or under ``torchrun --nproc_per_node N`` (DDP; gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import replace
from pathlib import Path

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
    emulated and far slower than fp32: 0.60 against 5.36 images/s for cpu-v2 on a 2-core AVX2 EPYC
    (docs/BENCHMARKS.md)."""
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


def train(cfg: Config, resume: str | None = None, progress: bool = True, until_step: int | None = None) -> dict:
    """Train per ``cfg``; returns the last validation summary. Checkpoints go to ``cfg.out``.

    ``until_step`` stops early as an interruption would (the schedule still spans the full run),
    which is how a run is trained in fixed slices and how the resume test interrupts.
    """
    tc = cfg.train
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("nccl" if cfg.device == "cuda" else "gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    master = rank == 0
    device = cfg.device
    if device == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda", "CUDA is not available on this machine")
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    if tc.threads:
        torch.set_num_threads(int(tc.threads))

    # --- data -----------------------------------------------------------------------------------
    train_set = load_split(cfg, cfg.train_split, progress and master)
    real = len(train_set)  # the split's own samples come first; train_extra's follow
    for extra in cfg.train_extra:
        more = prepare(os.path.expanduser(extra), *image_configs(cfg), cfg.cache_dir or DEFAULT_CACHE,
                       progress=progress and master)
        train_set = train_set.concat(more)
    if len(train_set) == 0:
        raise DatasetError(f"{cfg.dataset}:{cfg.train_split}", "no usable training samples")
    too_long = sum(len(t) + 1 > tc.max_tokens for t in train_set.tokens)
    if too_long:
        keep = [i for i, t in enumerate(train_set.tokens) if len(t) + 1 <= tc.max_tokens]
        real = sum(i < real for i in keep)
        train_set = train_set.select(keep)
    try:
        val_set = load_split(cfg, cfg.val_split, progress and master) if cfg.val_split else None
    except DatasetError:
        val_set = None
    ckpt = load_checkpoint(resume) if resume else None
    init = load_checkpoint(cfg.init) if cfg.init and not ckpt else None
    vocab = Vocab.from_tokens((ckpt or init)["vocab"]) if ckpt or init else Vocab.build(train_set.tokens)
    if master:
        print(f"train: {len(train_set)} expressions ({real} of {cfg.train_split}; {len(train_set.errors)} "
              f"unreadable, {too_long} over {tc.max_tokens} tokens skipped); val: {len(val_set) if val_set else 0}; "
              f"vocab {len(vocab)}")
        if tc.amp == "bf16" and not str(device).startswith("cuda") and not cpu_bf16_is_fast():
            print("warning: train.amp is bf16 but this CPU has no bf16 kernels (AVX-512 or AMX), so "
                  "autocast is emulated and several times slower than fp32; --set train.amp=none trains "
                  "in fp32 instead")
        if val_set is not None:
            unknown = vocab.unknown_symbols(val_set.tokens)
            if unknown:
                print("val symbols not in vocab: " + ", ".join(f"{t} ({c})" for t, c in unknown.most_common()))

    # --- model and optimiser --------------------------------------------------------------------
    torch.manual_seed(tc.seed)
    model = HMERModel(cfg.model, len(vocab)).to(device)
    cfg = replace(cfg, model=model.arch)  # checkpoints record the architecture in full
    # oneDNN/cuDNN run the DenseNet's convolutions faster channels-last (7.2 -> 8.7 images/s for
    # cpu-small on the 2-core CPU, docs/BENCHMARKS.md); only the memory layout changes.
    model.encoder.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    loader = BatchLoader.for_run(train_set, vocab, cfg, rank, world, real=real)
    per_epoch = max(1, len(loader) // tc.accumulate)
    total = tc.max_steps or tc.epochs * per_epoch
    step, epoch, batch_in_epoch, best = 0, 0, 0, -1.0
    rewarm_from: int | None = None  # the step a slim checkpoint resumed at (see below)
    history: list[dict] = []
    if init is not None:
        taken = init_weights(model, init["model"])
        if master:
            print(f"init: {taken} of {len(model.state_dict())} tensors from {cfg.init} (step {init['step']})")
    if ckpt:
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            detail = str(e).splitlines()[0][:120]
            raise TrainingError(str(resume), "its weights do not fit the configured model; resume without "
                                f"--config to continue with the checkpoint's own ({detail})") from e
        step, epoch, batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        if "optimizer" in ckpt:
            opt.load_state_dict(ckpt["optimizer"])
        else:  # a slimmed checkpoint (see slim_checkpoint): weights and position only
            # Fresh AdamW moments make the first updates about lr per weight whatever the gradient,
            # so the learning rate warms up again rather than jolting converged weights.
            rewarm_from = step
            print(f"checkpoint has no optimizer state: AdamW moments restart from zero, learning rate "
                  f"re-warmed over {tc.warmup_steps} steps")
        best = ckpt.get("best", -1.0)
        torch.set_rng_state(ckpt["rng"])
    # Validation, best.pt selection and export use the weights' moving average when train.ema is set.
    ema = ema_model(model, tc.ema) if tc.ema else None
    if ema is not None and ckpt and "ema" in ckpt:
        load_ema_state(ema, ckpt["ema"])
    elif ema is not None and ckpt and ckpt.get("averaged"):
        # A slim checkpoint's weights are already the average: keep averaging at the full decay
        # instead of warming up again, which would let the jolted first steps dominate it.
        ema.n_averaged.fill_(max(1, int(ckpt.get("ema_updates", ckpt["step"]))))
    raw_model = model
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    scaler = torch.amp.GradScaler(enabled=tc.amp == "fp16")

    out = Path(cfg.out)
    log_path = out / "log.csv"
    tb = None
    if master:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".*.tmp"):  # a checkpoint write cut off by a kill (save_checkpoint)
            stale.unlink(missing_ok=True)
        if ckpt:  # rows a killed run logged after its last checkpoint are about to be logged again
            for name in ("log.csv", "val.csv"):
                _truncate_log(out / name, step)
        tb = _tensorboard(out)

    def checkpoint(name: str, metrics: dict | None = None, slim: bool = False) -> None:
        state = {
            "model": raw_model.state_dict(), "optimizer": opt.state_dict(), "step": step, "epoch": epoch,
            "batch_in_epoch": batch_in_epoch, "rng": torch.get_rng_state(), "config": cfg,
            "vocab": vocab.tokens, "metrics": metrics or {}, "best": best,
            "scheduler": {"kind": "warmup-cosine", "total": total, "warmup": tc.warmup_steps},
            **({"ema": ema_state(ema)} if ema is not None else {}),
        }
        save_checkpoint(out / name, slimmed(state) if slim else state)

    # --- loop -----------------------------------------------------------------------------------
    summary: dict = {}
    skipped_nonfinite = 0
    stop = min(total, until_step or total)
    bar = tqdm(total=stop, initial=step, disable=not (progress and master), unit="step", dynamic_ncols=True)
    while step < stop and epoch < tc.epochs:
        model.train()
        t0, seen, micro = time.time(), 0, 0
        for batch in loader.epoch(epoch, start=batch_in_epoch * tc.accumulate, workers=tc.workers,
                                  pin_memory=device.startswith("cuda")):
            loss = forward_backward(model, batch, device, tc, scaler)
            if not torch.isfinite(loss):
                skipped_nonfinite += 1
                opt.zero_grad(set_to_none=True)
                if skipped_nonfinite > 10:
                    raise TrainingError("training", f"loss was NaN/inf {skipped_nonfinite} times; lower the "
                                        "learning rate or check the data")
                continue
            micro += 1
            seen += batch.images.shape[0]
            if micro % tc.accumulate:
                continue
            lr = lr_at(step, total, tc)
            if rewarm_from is not None:
                lr *= min(1.0, (step - rewarm_from + 1) / max(1, tc.warmup_steps))
            optimizer_step(model, opt, scaler, lr, tc.grad_clip)
            if ema is not None:
                ema.update_parameters(raw_model)
            step += 1
            batch_in_epoch += 1
            rate = seen * world / max(1e-9, time.time() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{rate:.1f}", epoch=epoch)
            if master and (step % tc.log_every == 0 or step == total):
                _log(log_path, {"step": step, "epoch": epoch, "loss": round(loss.item(), 5),
                                "lr": lr, "images_per_s": round(rate, 2),
                                "time": round(time.time(), 1)}, tb, "train/")
                checkpoint("last.pt")
            if step >= stop and batch_in_epoch < per_epoch:  # at the epoch's end, close the epoch
                break
        else:
            epoch, batch_in_epoch = epoch + 1, 0
        validate = epoch % tc.val_every == 0 or epoch >= tc.epochs or step >= total
        if master:
            metrics: dict = {}
            if validate and val_set is not None and len(val_set):
                # Cap decoding near the longest reference so an untrained model's endless output
                # doesn't dominate the epoch; reported test figures use hmer-eval's full max_len.
                cap = max(len(t) for t in val_set.tokens) + 10
                judged = ema.module if ema is not None else raw_model
                sizes = {"batch_size": max(16, tc.batch_size), "max_pixels": max(2_000_000, tc.max_pixels)}
                # validation reads greedy and unconstrained, so the curve shows the model alone
                options = DecodeOptions(beam=1, max_len=cap, grammar=False, rescore=False)
                metrics = summary = evaluate(TorchDecoder(judged, vocab, options), val_set, vocab, options,
                                             tc.val_max, **sizes)[0]
                summary.update(teacher_forced(judged, val_set, vocab, device, tc.val_max, **sizes))
                history.append(summary)
                tqdm.write(f"epoch {epoch} step {step} val {format_summary(summary)} | teacher-forced loss "
                           f"{summary['tf_loss']:.3f} token acc {summary['tf_acc']:.2f}")
                _log(out / "val.csv", {"step": step, "epoch": epoch, "exprate": round(summary["exprate"], 3),
                                       "le1": round(summary["le1"], 3), "le2": round(summary["le2"], 3),
                                       "wer": round(summary["wer"], 3), "tf_loss": round(summary["tf_loss"], 4),
                                       "tf_acc": round(summary["tf_acc"], 3), "time": round(time.time(), 1)},
                     tb, "val/")
            checkpoint("last.pt", metrics)
            if metrics and tc.keep_validated:
                # Averaging the last validated epochs smooths the swings between single checkpoints
                # (docs/MODEL.md); last.pt moves on before anyone can copy it.
                checkpoint(f"epoch-{epoch:03d}.pt", metrics, slim=True)
            if metrics and metrics["exprate"] > best:
                best = metrics["exprate"]
                checkpoint("best.pt", metrics)
            elif not (out / "best.pt").exists():
                checkpoint("best.pt", metrics)
        if step < stop and _stop_requested(out, master, distributed):
            if master:
                tqdm.write(f"{out / STOP_FILE} found: stopped after epoch {epoch} at step {step}; "
                           f"continue with --resume {out / 'last.pt'}")
            break
    bar.close()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    if skipped_nonfinite and master:
        print(f"skipped {skipped_nonfinite} batches with non-finite loss")
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
