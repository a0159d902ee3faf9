"""Training throughput (images/s) of a model config on real batches of a prepared split.

    python -m benchmarks.train_throughput --config configs/cpu-small.yaml --model comer --steps 10
    python -m benchmarks.train_throughput --config configs/cpu-small.yaml --amp none --workers 0

Runs forward + backward + AdamW step on the first batches of one shuffled epoch (augmentation on,
both reading directions as configured), after 2 warm-up steps, with the config's ``train.amp``
and ``train.workers`` unless the options override them.
"""

from __future__ import annotations

import time

import click
import torch

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
def main(config_path: str | None, model_type: str | None, steps: int, threads: int, amp: str | None,
         workers: int | None) -> None:
    torch.set_num_threads(threads)
    cfg = load_config(config_path, {"model.decoder": {"type": model_type} if model_type else None,
                                    "train.amp": amp, "train.workers": workers})
    tc = cfg.train
    data = load_split(cfg, cfg.train_split)
    vocab = Vocab.build(data.tokens)
    model = HMERModel(cfg.model, len(vocab)).train()
    model.encoder.to(memory_format=torch.channels_last)  # as hmer_train.train does
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = BatchLoader(data, vocab, tc.batch_size, tc.max_pixels, 0, tc.augment, tc.bidirectional,
                         (cfg.preprocess.max_height, cfg.preprocess.max_width))
    images, t0 = 0, None
    for i, b in enumerate(loader.epoch(0, workers=tc.workers)):
        if i == 2:
            t0, images = time.time(), 0
        with autocast("cpu", tc.amp):
            loss = batch_loss(model, b, "cpu")
        loss.backward()
        opt.step()
        opt.zero_grad()
        images += b.images.shape[0]
        if i == steps + 1:
            break
    dt = time.time() - t0
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{model.kind}: {params:.2f} M params, {images / dt:.2f} images/s over {steps} steps "
          f"({threads} threads, amp {tc.amp}, {tc.workers} workers, batch <= {tc.batch_size}, "
          f"<= {tc.max_pixels} px)")


if __name__ == "__main__":
    main()
