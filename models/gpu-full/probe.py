"""Run on a GPU machine (models/gpu-full/README.md): python3 models/gpu-full/probe.py [STEPS]

Steady-state step time of the gpu-full config by variant: a second epoch's batches after a
first, so convolution plans made for shapes already seen are reused as in a long run."""

import sys
import time

import torch

from hmer_runtime.text.vocab import Vocab
from hmer_train.config import load_config
from hmer_train.data import BatchLoader
from hmer_train.models.base import HMERModel
from hmer_train.train import autocast, batch_loss, load_split

cfg = load_config("configs/gpu-full.yaml")
tc = cfg.train
data = load_split(cfg, "train", progress=False)
vocab = Vocab.build(data.tokens)
n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
for pad, cudnn in ((16, True), (64, True), (16, False)):
    torch.backends.cudnn.enabled = cudnn
    torch.manual_seed(0)
    model = HMERModel(cfg.model, len(vocab)).cuda()
    model.encoder.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = BatchLoader(data, vocab, tc.batch_size, tc.max_pixels, 0, tc.augment, True,
                         (256, 1024), pad_to=pad)
    picked = loader.order(0)[:n]
    times = []
    for epoch in (0, 1):  # the same batches, augmented as two epochs augment them
        batches = [loader.batch(epoch, b) for b in picked]
        torch.cuda.synchronize()
        t0, seen = time.time(), 0
        for batch in batches:
            with autocast("cuda", "bf16"):
                loss = batch_loss(model, batch, "cuda")
            loss.backward()
            opt.step()
            opt.zero_grad()
            loss.item()
            seen += batch.images.shape[0]
        torch.cuda.synchronize()
        times.append((time.time() - t0, seen))
    (t1, s1), (t2, s2) = times
    print(f"pad_to {pad} cudnn {cudnn}: first pass {n / t1:.2f} steps/s; second pass {n / t2:.2f} steps/s, "
          f"{s2 / t2:.0f} images/s", flush=True)
