"""One evaluation loop for every decoder: training's validation and ``hmer-eval`` both call it.

The decoder is anything with the runtime's ``decode(images, mask, options)``: the PyTorch
:class:`~hmer_train.decoding.TorchDecoder` or an exported model's ``OnnxModel``; only the
options differ between callers, and each caller writes its own out.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tqdm import tqdm

from hmer_runtime.decoding.confidence import features
from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.decoding.hypothesis import Hypothesis
from hmer_runtime.decoding.pooling import pool, view_options
from hmer_runtime.inputs.preprocess import pad_batch
from hmer_runtime.text.metrics import Metrics
from hmer_runtime.text.vocab import Vocab
from hmer_train.data import make_batches
from hmer_train.prepared import PreparedSet


def evaluate(decoder, data: PreparedSet | Sequence[PreparedSet], vocab: Vocab, options: DecodeOptions,
             limit: int | None = None, batch_size: int = 16, max_pixels: int = 2_000_000, stride: int = 1,
             progress: bool | None = False) -> tuple[dict, list[dict]]:
    """(summary, rows) of ``decoder`` on the first ``limit`` samples of ``data``, batched by size:
    ExpRate, <=1, <=2 and WER, and one row per expression (file, truth, prediction, score, edits).
    ``data`` may be the same samples prepared at each of ``options.scales`` (``prepare(..., scale=)``):
    each is decoded with its own options and each expression's views are pooled (``decoding.pooling``).
    ``stride``: what batches are padded to (an exported model's ``stride``; PyTorch pads itself).
    ``progress``: a bar on stderr (None: only when stderr is a terminal, so logs stay readable)."""
    views = [data] if isinstance(data, PreparedSet) else list(data)
    n = len(views[0]) if limit is None else min(limit, len(views[0]))
    subs = [v.select(range(n)) if n < len(v) else v for v in views]
    if any(sub.names != subs[0].names for sub in subs):
        raise ValueError("the views of a data set must hold the same samples in the same order")
    bar = tqdm(total=n * len(subs), desc="decoding", unit="expr", file=sys.stderr, leave=False,
               disable=None if progress is None else not progress)
    decoded = [decode_set(decoder, sub, o, batch_size, max_pixels, stride, bar.update)
               for sub, o in zip(subs, view_options(options, len(subs)))]
    bar.close()
    return score(subs[0], vocab, [pool([view[i] for view in decoded]) for i in range(n)])


def decode_set(decoder, data: PreparedSet, options: DecodeOptions, batch_size: int = 16,
               max_pixels: int = 2_000_000, stride: int = 1, done=None) -> list[list[Hypothesis]]:
    """Each sample's hypotheses, best first, decoded in batches by size; ``done(k)`` after each batch."""
    out: list[list[Hypothesis]] = [[] for _ in range(len(data))]
    for idx in make_batches(data.shapes, batch_size, max_pixels):
        for i, hs in zip(idx, decoder.decode(*pad_batch([data.image(i) for i in idx], stride), options)):
            out[i] = hs
        if done:
            done(len(idx))
    return out


def score(data: PreparedSet, vocab: Vocab, hyps: list[list[Hypothesis]]) -> tuple[dict, list[dict]]:
    """(summary, rows) of each sample's hypotheses against its labels."""
    metrics, rows = Metrics(), []
    for i, hs in enumerate(hyps):
        pred = vocab.decode(hs[0].ids)
        rows.append({"file": data.names[i], "truth": " ".join(data.tokens[i]), "prediction": " ".join(pred),
                     "score": hs[0].score, "edits": metrics.add(data.tokens[i], pred),
                     "features": features(hs)})  # what the confidence is fitted on
    return metrics.summary(), rows
