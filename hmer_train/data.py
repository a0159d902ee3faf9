"""Batches for training: pixel-budget bucketing, augmentation, padding + masks, both directions."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter

from hmer_runtime.preprocess import pad_batch
from hmer_runtime.vocab import Vocab
from hmer_train.prepared import PreparedSet


@dataclass
class Batch:
    images: torch.Tensor  # (N, 1, H, W) float, ink 1.0
    mask: torch.Tensor  # (N, H, W) bool
    inputs: torch.Tensor  # (N', T) decoder inputs (N' = 2N when bidirectional)
    targets: torch.Tensor  # (N', T) with -1 where padded
    image_index: torch.Tensor  # (N',) which image each sequence belongs to
    names: list[str]


def make_batches(shapes: np.ndarray, max_images: int, max_pixels: int) -> list[list[int]]:
    """Group sample indices so each batch's padded pixels (n x maxH x maxW) fit the budget.

    Samples are sorted by area so batches hold similar sizes; a sample bigger than the budget
    alone gets a batch of its own.
    """
    order = np.lexsort((shapes[:, 1], shapes[:, 0] * shapes[:, 1]))
    batches: list[list[int]] = []
    cur: list[int] = []
    mh = mw = 0
    for i in order:
        h, w = shapes[i]
        nh, nw = max(mh, h), max(mw, w)
        if cur and (len(cur) + 1 > max_images or (len(cur) + 1) * nh * nw > max_pixels):
            batches.append(cur)
            cur, nh, nw = [], h, w
        cur.append(int(i))
        mh, mw = nh, nw
    if cur:
        batches.append(cur)
    return batches


def augment(img: np.ndarray, rng: random.Random, cfg: dict, max_hw: tuple[int, int]) -> np.ndarray:
    """Scale (CoMER's x0.7-1.4), small rotation/shear and stroke-width jitter on an ink-1.0 image."""
    h, w = img.shape
    lo, hi = cfg.get("scale", (1.0, 1.0))
    s = rng.uniform(lo, hi)
    s = min(s, max_hw[0] / h, max_hw[1] / w)
    pil = Image.fromarray((img * 255).astype(np.uint8))
    if abs(s - 1) > 1e-3:
        pil = pil.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)
    rot, shear = cfg.get("rotate_deg", 0.0), cfg.get("shear", 0.0)
    if rot or shear:
        a = np.deg2rad(rng.uniform(-rot, rot))
        sh = rng.uniform(-shear, shear)
        cw, chh = pil.size[0] / 2, pil.size[1] / 2
        m = np.array([[np.cos(a), -np.sin(a) + sh], [np.sin(a), np.cos(a)]])
        inv = np.linalg.inv(m)
        off = np.array([cw, chh]) - inv @ np.array([cw, chh])
        pil = pil.transform(pil.size, Image.Transform.AFFINE,
                            (inv[0, 0], inv[0, 1], off[0], inv[1, 0], inv[1, 1], off[1]),
                            resample=Image.Resampling.BILINEAR)
    p = cfg.get("stroke_jitter", 0.0)
    if p and rng.random() < p:
        pil = pil.filter(ImageFilter.MaxFilter(3) if rng.random() < 0.5 else ImageFilter.MinFilter(3))
        if np.asarray(pil).max() == 0:  # thinning erased thin ink: undo
            pil = Image.fromarray((img * 255).astype(np.uint8))
    return np.asarray(pil, dtype=np.float32) / 255.0


def collate(images: list[np.ndarray], token_ids: list[list[int]], names: list[str], vocab: Vocab,
            bidirectional: bool) -> Batch:
    n = len(images)
    x, mask = (torch.from_numpy(a) for a in pad_batch(images))
    seqs = [([vocab.sos_id] + ids, ids + [vocab.eos_id]) for ids in token_ids]
    index = list(range(n))
    if bidirectional:
        seqs += [([vocab.eos_id] + ids[::-1], ids[::-1] + [vocab.sos_id]) for ids in token_ids]
        index += list(range(n))
    t = max(len(s[0]) for s in seqs)
    inputs = torch.full((len(seqs), t), vocab.pad_id, dtype=torch.long)
    targets = torch.full((len(seqs), t), -1, dtype=torch.long)
    for i, (inp, tgt) in enumerate(seqs):
        inputs[i, : len(inp)] = torch.tensor(inp)
        targets[i, : len(tgt)] = torch.tensor(tgt)
    return Batch(x, mask, inputs, targets, torch.tensor(index), names)


class BatchLoader:
    """Deterministic batches: epoch ``e`` order and augmentation depend only on (seed, e, index),
    so a resumed run sees exactly the batches the uninterrupted one would."""

    def __init__(self, data: PreparedSet, vocab: Vocab, max_images: int, max_pixels: int, seed: int,
                 augment_cfg: dict | None, bidirectional: bool, max_hw: tuple[int, int], rank: int = 0,
                 world: int = 1):
        self.data, self.vocab = data, vocab
        self.batches = make_batches(data.shapes, max_images, max_pixels)
        self.seed, self.augment_cfg, self.bidirectional, self.max_hw = seed, augment_cfg, bidirectional, max_hw
        self.ids = [vocab.encode(t) for t in data.tokens]
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return len(self.batches) // self.world

    def epoch(self, epoch: int, start: int = 0):
        order = list(range(len(self.batches)))
        random.Random(f"{self.seed}-{epoch}").shuffle(order)
        # Under DDP each rank takes its own equal share of the shuffled batches.
        order = order[self.rank::self.world][: len(self)]
        for b in order[start:]:
            idx = self.batches[b]
            imgs = []
            for i in idx:
                img = self.data.image(i)
                if self.augment_cfg:
                    img = augment(img, random.Random(f"{self.seed}-{epoch}-{i}"), self.augment_cfg, self.max_hw)
                imgs.append(img)
            yield collate(imgs, [self.ids[i] for i in idx], [self.data.names[i] for i in idx], self.vocab,
                          self.bidirectional)
