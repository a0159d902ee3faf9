"""Training throughput (images/s) of a model config on real batches of a prepared split.

    python -m benchmarks.train_throughput --config configs/cpu-small.yaml --model comer --steps 10
    python -m benchmarks.train_throughput --config configs/cpu-small.yaml --amp none --workers 0
    python -m benchmarks.train_throughput --config configs/cpu-v2.yaml --profile   # where a step's time goes
    python -m benchmarks.train_throughput --config configs/cpu-v2.yaml --compile --pad-to 64

Runs forward + backward + AdamW step on the first batches of one shuffled epoch (augmentation on,
both reading directions as configured), after ``--warmup`` steps, with the config's ``train.amp``,
``train.workers`` and ``train.pad_to`` unless the options override them. ``--profile`` runs the
measured steps under torch.profiler and prints the time per phase and the costliest operators;
``--compile`` wraps the model in ``torch.compile`` (its compilation falls in the warm-up steps,
and every new batch shape the measured steps meet recompiles, which ``--pad-to`` limits;
``--one-shape`` repeats one batch, the best case).
"""

from __future__ import annotations

import contextlib
import time

import click
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from hmer_runtime.cli_util import CONTEXT_SETTINGS
from hmer_runtime.text.vocab import Vocab
from hmer_train.config import load_config
from hmer_train.data import BatchLoader
from hmer_train.models.base import HMERModel
from hmer_train.train import autocast, batch_loss, load_split


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--model", "model_type", type=click.Choice(["wap", "comer"]))
@click.option("--steps", default=10, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--amp", type=click.Choice(["bf16", "none"]), help="Autocast (default: the config's train.amp).")
@click.option("--workers", type=int, help="Batch-building processes (default: the config's train.workers).")
@click.option("--pad-to", type=click.IntRange(min=1),
              help="Pad batch shapes to a multiple of this (default: the config's train.pad_to).")
@click.option("--warmup", default=2, show_default=True, help="Unmeasured steps first.")
@click.option("--profile", "profiled", is_flag=True, help="Profile the measured steps (torch.profiler).")
@click.option("--compile", "compiled", is_flag=True, help="torch.compile the model.")
@click.option("--one-shape", is_flag=True, help="Repeat the first batch: one shape, compilation's best case.")
def main(config_path: str | None, model_type: str | None, steps: int, threads: int, amp: str | None,
         workers: int | None, pad_to: int | None, warmup: int, profiled: bool, compiled: bool,
         one_shape: bool) -> None:
    torch.set_num_threads(threads)
    cfg = load_config(config_path, {"model.decoder": {"type": model_type} if model_type else None,
                                    "train.amp": amp, "train.workers": workers, "train.pad_to": pad_to})
    tc = cfg.train
    data = load_split(cfg, cfg.train_split)
    vocab = Vocab.build(data.tokens)
    model = HMERModel(cfg.model, len(vocab)).train()
    model.encoder.to(memory_format=torch.channels_last)  # as hmer_train.train does
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    # dynamic=False: with dynamic shapes inductor fails on this encoder (pytorch/pytorch#172204)
    step_model = torch.compile(model, dynamic=False) if compiled else model
    # Augmented renders as in the first measurements (no ink re-rendering), so figures compare.
    loader = BatchLoader(data, vocab, tc.batch_size, tc.max_pixels, 0, tc.augment, tc.bidirectional,
                         (cfg.preprocess.max_height, cfg.preprocess.max_width), pad_to=tc.pad_to)
    prof = profile(activities=[ProfilerActivity.CPU]) if profiled else contextlib.nullcontext()
    phase = record_function if profiled else lambda name: contextlib.nullcontext()
    images, t0, shapes, first = 0, time.time(), set(), None
    batches = loader.epoch(0, workers=tc.workers)
    for i in range(warmup + steps):
        if i == warmup:
            warm_s, t0, images = time.time() - t0, time.time(), 0
            prof.__enter__()
        with phase("batch (wait for the loader)"):
            b = first if one_shape and i else next(batches)
            first = first if i else b
        with phase("forward + loss"), autocast("cpu", tc.amp):
            loss = batch_loss(step_model, b, "cpu")
        with phase("backward"):
            loss.backward()
        with phase("clip + AdamW"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            opt.zero_grad()
        images += b.images.shape[0]
        shapes.add(tuple(b.images.shape))
    dt = time.time() - t0
    batches.close()
    prof.__exit__(None, None, None)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{model.kind}: {params:.2f} M params, {images / dt:.2f} images/s over {steps} steps "
          f"({threads} threads, amp {tc.amp}, {tc.workers} workers, batch <= {tc.batch_size}, "
          f"<= {tc.max_pixels} px, pad_to {tc.pad_to}{', compiled' if compiled else ''}; "
          f"{len(shapes)} batch shapes; warm-up {warm_s:.1f} s)")
    if profiled:
        print_profile(prof, dt)


def print_profile(prof, wall_s: float, top: int = 25) -> None:
    """Time per phase (share of the wall time), then the operators with the most self time."""
    events = prof.key_averages()
    print(f"\n{'phase':<30} {'s':>8} {'share':>7}")
    for e in events:
        if e.key in ("batch (wait for the loader)", "forward + loss", "backward", "clip + AdamW"):
            print(f"{e.key:<30} {e.cpu_time_total / 1e6:8.2f} {100 * e.cpu_time_total / 1e6 / wall_s:6.1f}%")
    print()
    print(events.table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=50))


if __name__ == "__main__":
    main()
