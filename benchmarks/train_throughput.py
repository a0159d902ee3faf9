"""Training throughput (images/s) of a model config on real batches of a prepared split.

    python -m benchmarks.train_throughput --config configs/cpu-small.yaml --model comer --steps 10
    python -m benchmarks.train_throughput --config configs/cpu-small.yaml --amp none --workers 0
    python -m benchmarks.train_throughput --config configs/cpu-v2.yaml --profile   # where a step's time goes
    python -m benchmarks.train_throughput --config configs/cpu-v2.yaml --compile static --one-shape

Runs forward + backward + AdamW step on the first batches of one shuffled epoch (augmentation on,
both reading directions as configured), after ``--warmup`` steps, with the config's ``train.amp``,
``train.workers`` and ``train.pad_to`` unless the options override them. ``--profile`` runs the
measured steps under torch.profiler and prints the time per phase and the costliest operators;
``--compile`` wraps the model in ``torch.compile`` (its compilation falls in the warm-up steps;
``static`` compiles again for every new batch shape, which ``--pad-to`` limits, and
``--one-shape`` repeats one batch, compilation's best case). ``--passes 2`` runs the same
batches again, to tell what a new shape costs from what a batch's images cost.
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
from hmer_train.train import forward_backward, load_split, optimizer_step


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
@click.option("--compile", "compiled", type=click.Choice(["dynamic", "static"]),
              help="torch.compile the model: dynamic shapes (torch's default), or one graph per shape.")
@click.option("--one-shape", is_flag=True, help="Repeat the first batch: one shape, compilation's best case.")
@click.option("--passes", default=1, show_default=True,
              help="Run the measured batches this many times (shapes seen before, from the second).")
def main(config_path: str | None, model_type: str | None, steps: int, threads: int, amp: str | None,
         workers: int | None, pad_to: int | None, warmup: int, profiled: bool, compiled: str | None,
         one_shape: bool, passes: int) -> None:
    torch.set_num_threads(threads)
    cfg = load_config(config_path, {"model.decoder": {"type": model_type} if model_type else None,
                                    "train.amp": amp, "train.workers": workers, "train.pad_to": pad_to})
    tc = cfg.train
    data = load_split(cfg, cfg.train_split)
    vocab = Vocab.build(data.tokens)
    model = HMERModel(cfg.model, len(vocab)).train()
    model.encoder.to(memory_format=torch.channels_last)  # as hmer_train.train does
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    # dynamic=None is torch's default: static first, dynamic once a second shape comes
    step_model = torch.compile(model, dynamic=None if compiled == "dynamic" else False) if compiled else model
    # Augmented renders as in the first measurements (no ink re-rendering), so figures compare.
    loader = BatchLoader(data, vocab, tc.batch_size, tc.max_pixels, 0, tc.augment, tc.bidirectional,
                         (cfg.preprocess.max_height, cfg.preprocess.max_width), pad_to=tc.pad_to)
    prof = profile(activities=[ProfilerActivity.CPU]) if profiled else contextlib.nullcontext()

    scaler = torch.amp.GradScaler(enabled=False)

    def train_step(b) -> None:
        forward_backward(step_model, b, "cpu", tc, scaler)
        optimizer_step(model, opt, scaler, 1e-4, tc.grad_clip)

    epoch = loader.epoch(0, workers=tc.workers)
    t0, first = time.time(), None
    for _ in range(warmup):
        b = first if one_shape and first else next(epoch)
        first = first or b
        train_step(b)
    warm_s = time.time() - t0
    rates, replay, shapes, dt = [], [], set(), 0.0
    with prof:
        for p in range(passes):
            t0, images = time.time(), 0
            for i in range(steps):
                with record_function("batch (wait for the loader)"):
                    b = replay[i] if p else first if one_shape and first else next(epoch)
                first = first or b
                if not p:
                    replay.append(b)
                train_step(b)
                images += b.images.shape[0]
                shapes.add(tuple(b.images.shape))
            rates.append(images / (time.time() - t0))
            dt += time.time() - t0
    epoch.close()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    again = f"; again over the same batches: {', '.join(f'{r:.2f}' for r in rates[1:])}" if passes > 1 else ""
    print(f"{model.kind}: {params:.2f} M params, {rates[0]:.2f} images/s over {steps} steps{again} "
          f"({threads} threads, amp {tc.amp}, {tc.workers} workers, batch <= {tc.batch_size}, "
          f"<= {tc.max_pixels} px, pad_to {tc.pad_to}{f', compiled {compiled}' if compiled else ''}; "
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
