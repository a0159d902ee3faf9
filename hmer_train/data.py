"""Batches for training: pixel-budget bucketing, augmentation, padding + masks, both directions."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import numpy as np
import torch

from hmer_runtime.errors import HmerError
from hmer_runtime.inputs.preprocess import PreprocessConfig, pad_batch
from hmer_runtime.inputs.render import RenderConfig
from hmer_runtime.text.vocab import Vocab
from hmer_train.augment import augment_image, finish_image, render_augmented
from hmer_train.config import AugmentConfig, Config, image_configs
from hmer_train.prepared import PreparedSet


@dataclass
class Batch:
    images: torch.Tensor  # (N, 1, H, W) float, ink 1.0
    mask: torch.Tensor  # (N, H, W) bool
    inputs: torch.Tensor  # (N', T) decoder inputs (N' = 2N when bidirectional)
    targets: torch.Tensor  # (N', T) with -1 where padded
    image_index: torch.Tensor  # (N',) which image each sequence belongs to
    names: list[str]

    def pin_memory(self) -> Batch:
        """Page-locked copy (DataLoader's pin_memory calls this), for asynchronous copies to a GPU."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).pin_memory()
                                           for f in dataclasses.fields(self) if f.name != "names"})


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


def collate(images: list[np.ndarray], token_ids: list[list[int]], names: list[str], vocab: Vocab,
            bidirectional: bool, pad_to: int = 1) -> Batch:
    """A padded batch; ``pad_to`` rounds its height and width up to a multiple (fewer distinct
    shapes, which GPU convolution libraries plan once per shape)."""
    n = len(images)
    x, mask = (torch.from_numpy(a) for a in pad_batch(images, pad_to))
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
    so a resumed run sees exactly the batches the uninterrupted one would.

    With ``augment.ink`` and the ``images`` (render, preprocess) settings the set was prepared
    with, ink samples are augmented as ink and rendered again (:mod:`hmer_train.augment`);
    batches are still planned on the prepared shapes.

    With ``real`` (the first ``real`` samples are the real ones, the rest extra) and
    ``extra_ratio`` > 0, each epoch holds every real sample and ``extra_ratio`` extra samples per
    real one, drawn in turn from a fixed shuffle of the extra samples, so successive epochs see
    different extra samples and the real ones are never outnumbered beyond the ratio."""

    def __init__(self, data: PreparedSet, vocab: Vocab, max_images: int, max_pixels: int, seed: int,
                 augment_cfg: AugmentConfig | None, bidirectional: bool, max_hw: tuple[int, int],
                 rank: int = 0, world: int = 1, pad_to: int = 1,
                 images: tuple[RenderConfig, PreprocessConfig] | None = None,
                 real: int | None = None, extra_ratio: float = 0.0):
        self.data, self.vocab = data, vocab
        self.max_images, self.max_pixels = max_images, max_pixels
        self.real = len(data) if real is None else real
        n_extra = len(data) - self.real
        self.extra_per_epoch = min(n_extra, round(extra_ratio * self.real)) if extra_ratio > 0 else 0
        self._extra_order = np.random.default_rng(seed).permutation(n_extra) if self.extra_per_epoch else None
        self._plans: dict[int, list[list[int]]] = {}
        self.batches = self.plan(0)
        augment_cfg = augment_cfg or AugmentConfig()
        self.seed, self.augment_cfg, self.bidirectional, self.max_hw = seed, augment_cfg, bidirectional, max_hw
        self.images = images
        self.ids = [vocab.encode(t) for t in data.tokens]
        self.rank, self.world, self.pad_to = rank, world, pad_to

    @classmethod
    def for_run(cls, data: PreparedSet, vocab: Vocab, cfg: Config, rank: int = 0, world: int = 1,
                real: int | None = None) -> BatchLoader:
        """The training batches of run ``cfg`` (its train section, input sizes and renders);
        ``real``: how many of ``data``'s first samples are the training split's own."""
        tc = cfg.train
        return cls(data, vocab, tc.batch_size, tc.max_pixels, tc.seed, tc.augment, tc.bidirectional,
                   (cfg.preprocess.max_height, cfg.preprocess.max_width), rank, world, tc.pad_to,
                   images=image_configs(cfg), real=real, extra_ratio=tc.extra_ratio)

    def plan(self, epoch: int) -> list[list[int]]:
        """The batches (sample indices) of ``epoch``: the same every epoch unless extra samples
        are drawn per epoch."""
        if self._extra_order is None:
            if not self._plans:
                self._plans[0] = make_batches(self.data.shapes, self.max_images, self.max_pixels)
            return self._plans[0]
        if epoch not in self._plans:
            k = self.extra_per_epoch
            drawn = np.take(self._extra_order, np.arange(epoch * k, (epoch + 1) * k), mode="wrap")
            chosen = np.concatenate([np.arange(self.real), self.real + np.sort(drawn)])
            sub = make_batches(self.data.shapes[chosen], self.max_images, self.max_pixels)
            self._plans = {epoch: [[int(chosen[i]) for i in b] for b in sub]}  # only the current epoch
        return self._plans[epoch]

    def __len__(self) -> int:
        return len(self.batches) // self.world

    def order(self, epoch: int) -> list[int]:
        """This rank's batch indices for ``epoch``, in training order."""
        order = list(range(len(self.plan(epoch))))
        random.Random(f"{self.seed}-{epoch}").shuffle(order)
        # Under DDP each rank takes its own equal share of the shuffled batches.
        return order[self.rank::self.world][: len(order) // self.world]

    def batch(self, epoch: int, b: int) -> Batch:
        """Batch ``b`` of the bucketing as epoch ``epoch`` augments it."""
        idx = self.plan(epoch)[b]
        imgs = [self.sample(epoch, i) for i in idx]
        return collate(imgs, [self.ids[i] for i in idx], [self.data.names[i] for i in idx], self.vocab,
                       self.bidirectional, self.pad_to)

    def sample(self, epoch: int, i: int) -> np.ndarray:
        """Model input of sample ``i`` as epoch ``epoch`` augments it."""
        cfg = self.augment_cfg
        if not cfg.active:
            return self.data.image(i)
        rng = random.Random(f"{self.seed}-{epoch}-{i}")
        ink = self.data.ink(i) if cfg.ink and self.images is not None else None
        if ink is None:
            return augment_image(self.data.image(i), rng, cfg, self.max_hw)
        try:
            img = render_augmented(ink, rng, cfg, *self.images)
        except HmerError:  # a distortion the renderer refuses: this time, the sample as prepared
            return self.data.image(i)
        return finish_image(img, rng, cfg, self.max_hw)

    def epoch(self, epoch: int, start: int = 0, workers: int = 0, pin_memory: bool = False):
        """Epoch ``epoch``'s batches from position ``start`` on. ``workers`` > 0 augments and
        collates in that many processes, ahead of the training step; the batches are the same."""
        order = self.order(epoch)[start:]
        if workers <= 0:
            for b in order:
                yield self.batch(epoch, b)
            return
        loader = torch.utils.data.DataLoader(_EpochBatches(self, epoch, order), batch_size=None,
                                             num_workers=workers, prefetch_factor=4, pin_memory=pin_memory,
                                             multiprocessing_context="fork",
                                             # its own seed source: the global RNG (dropout) stays as a
                                             # resumed run restores it
                                             generator=torch.Generator().manual_seed(self.seed))
        yield from loader


class _EpochBatches(torch.utils.data.Dataset):
    """One epoch's batches as a map-style dataset, so DataLoader workers can build them."""

    def __init__(self, loader: BatchLoader, epoch: int, order: list[int]):
        self.loader, self.epoch_, self.order = loader, epoch, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, k: int) -> Batch:
        return self.loader.batch(self.epoch_, self.order[k])
