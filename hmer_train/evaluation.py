"""One evaluation loop for every decoder: training's validation and ``hmer-eval`` both call it.

The decoder is anything with the runtime's ``decode(images, mask, options)``: the PyTorch
:class:`~hmer_train.decoding.TorchDecoder` or an exported model's ``OnnxModel``; only the
options differ between callers, and each caller writes its own out.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from hmer_runtime.decoding.confidence import features
from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.inputs.preprocess import pad_batch
from hmer_runtime.text.metrics import Metrics
from hmer_runtime.text.vocab import Vocab
from hmer_train.data import make_batches
from hmer_train.prepared import PreparedSet


def evaluate(decoder, data: PreparedSet, vocab: Vocab, options: DecodeOptions, limit: int | None = None,
             batch_size: int = 16, max_pixels: int = 2_000_000, stride: int = 1,
             progress: bool | None = False) -> tuple[dict, list[dict]]:
    """(summary, rows) of ``decoder`` on the first ``limit`` samples of ``data``, batched by size:
    ExpRate, <=1, <=2 and WER, and one row per expression (file, truth, prediction, score, edits).
    ``stride``: what batches are padded to (an exported model's ``stride``; PyTorch pads itself).
    ``progress``: a bar on stderr (None: only when stderr is a terminal, so logs stay readable)."""
    n = len(data) if limit is None else min(limit, len(data))
    sub = data.select(range(n)) if n < len(data) else data
    metrics, rows = Metrics(), []
    batches = make_batches(sub.shapes, batch_size, max_pixels)
    bar = tqdm(total=n, desc="decoding", unit="expr", file=sys.stderr, leave=False,
               disable=None if progress is None else not progress)
    for idx in batches:
        hyps = decoder.decode(*pad_batch([sub.image(i) for i in idx], stride), options)
        for i, hs in zip(idx, hyps):
            pred = vocab.decode(hs[0].ids)
            rows.append({"file": sub.names[i], "truth": " ".join(sub.tokens[i]), "prediction": " ".join(pred),
                         "score": hs[0].score, "edits": metrics.add(sub.tokens[i], pred),
                         "features": features(hs)})  # what the confidence is fitted on
        bar.update(len(idx))
    bar.close()
    return metrics.summary(), rows
