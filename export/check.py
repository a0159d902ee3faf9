"""Exported graphs against PyTorch: encoder outputs, every step's logits, greedy and beam sequences.

The ONNX side is decoded by the runtime's own :class:`~hmer_runtime.engine.onnx_model.OnnxModel`, so a
passing check covers the code users deploy, not a copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hmer_runtime.engine.onnx_model import OnnxModel
from hmer_runtime.errors import HmerError
from hmer_runtime.inputs.inkml import Ink
from hmer_runtime.inputs.preprocess import PreprocessConfig, pad_batch
from hmer_runtime.inputs.render import RenderConfig, model_input
from hmer_train.decoding import TorchDecoder, encode_each_image
from hmer_train.models.base import HMERModel


class ExportCheckError(HmerError):
    """The exported graphs disagree with PyTorch beyond tolerance."""


@dataclass
class CheckReport:
    images: int
    encoder_max_abs: float
    logits_max_abs: float
    greedy_equal: int
    beam_equal: int
    beam: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def summary(self) -> str:
        return (f"{self.images} images: encoder max |diff| {self.encoder_max_abs:.2e}, step logits "
                f"{self.logits_max_abs:.2e}; greedy equal {self.greedy_equal}/{self.images}, "
                f"beam {self.beam} equal {self.beam_equal}/{self.images}")


def scribble_images(render: RenderConfig, pre: PreprocessConfig, n: int = 6, seed: int = 0) -> list[np.ndarray]:
    """Model inputs of random pen scribbles of different lengths: fixture images that need no dataset."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        strokes = []
        for j in range(2 + 2 * i):
            t = np.linspace(0, 1, 20)
            x = j * 1.2 + 0.5 * np.sin(2 * np.pi * (t * rng.uniform(0.5, 2) + rng.uniform()))
            y = 0.5 * np.cos(2 * np.pi * (t * rng.uniform(0.5, 2) + rng.uniform())) + rng.normal(0, 0.1)
            strokes.append(np.stack([x, y], 1).tolist())
        out.append(model_input(Ink.from_strokes(strokes), render, pre, f"scribble {i}"))
    return out


def _batch(images: list[np.ndarray], stride: int):
    x, m = pad_batch(images, stride)
    return x, m, torch.from_numpy(x), torch.from_numpy(m)


@torch.no_grad()
def compare(model: HMERModel, onnx_model: OnnxModel, images: list[np.ndarray], beam: int = 3,
            max_len: int | None = None) -> tuple[CheckReport, list[list[int]], list[list[int]]]:
    """Run both sides on ``images``; returns the report and the greedy ids of (PyTorch, ONNX)."""
    spec = onnx_model.spec
    max_len = max_len or spec.decode.max_len
    sos, eos = spec.vocab.sos_id, spec.vocab.eos_id
    x, m, tx, tm = _batch(images, spec.stride)
    model.eval()

    t_mem = encode_each_image(model, tx, tm)  # as the runtime encodes a batch
    t_state = model.init_state(t_mem)
    o_mem, o_state = onnx_model.encode(x, m)
    enc_diff = max(float(np.abs(o_mem[k].astype(np.float32) - t_mem[k].float().numpy()).max())
                   for k in o_mem if o_mem[k].dtype != bool)

    # both sides decode with the runtime's default options (grammar, rescoring), at beam 1 and ``beam``
    greedy_opts = spec.decode.with_overrides(beam=1, max_len=max_len)
    beam_opts = greedy_opts.with_overrides(beam=beam)
    torch_decoder = TorchDecoder(model, spec.vocab)
    torch_greedy = [h[0].ids for h in torch_decoder.decode(tx, tm, greedy_opts)]
    # Teacher-force PyTorch's greedy tokens through both step functions and compare every step.
    steps = max(len(s) for s in torch_greedy) + 1
    tokens = np.full((len(images), steps), eos, dtype=np.int64)
    tokens[:, 0] = sos
    for i, s in enumerate(torch_greedy):
        tokens[i, 1:len(s) + 1] = s
    logit_diff = 0.0
    for t in range(steps):
        lt, _, t_state = model.step(torch.from_numpy(tokens[:, t]), t_state, t_mem)
        lo, _, o_state = onnx_model.step(tokens[:, t], o_state, o_mem)
        live = np.array([t <= len(s) for s in torch_greedy])  # rows still inside their sequence
        logit_diff = max(logit_diff, float(np.abs(lo[live].astype(np.float32) - lt.numpy()[live]).max()))

    onnx_greedy = [h[0].ids for h in onnx_model.decode(x, m, greedy_opts)]
    torch_beam = [h[0].ids for h in torch_decoder.decode(tx, tm, beam_opts)]
    onnx_beam = [h[0].ids for h in onnx_model.decode(x, m, beam_opts)]
    report = CheckReport(len(images), enc_diff, logit_diff, sum(a == b for a, b in zip(torch_greedy, onnx_greedy)),
                         sum(a == b for a, b in zip(torch_beam, onnx_beam)), beam)
    return report, torch_greedy, onnx_greedy


def check_fp32(model: HMERModel, onnx_model: OnnxModel, images: list[np.ndarray], beam: int = 3,
               tolerance: float = 1e-3, batch_size: int = 8, min_agreement: float = 0.99) -> CheckReport:
    """Raise ExportCheckError unless every output matches within ``tolerance`` and at least
    ``min_agreement`` of greedy and of beam sequences are identical (float rounding can flip a
    near-tie between two hypotheses; anything more is a broken graph)."""
    total = None
    for i in range(0, len(images), batch_size):
        r, _, _ = compare(model, onnx_model, images[i:i + batch_size], beam)
        total = r if total is None else CheckReport(
            total.images + r.images, max(total.encoder_max_abs, r.encoder_max_abs),
            max(total.logits_max_abs, r.logits_max_abs), total.greedy_equal + r.greedy_equal,
            total.beam_equal + r.beam_equal, beam)
    assert total is not None
    if total.encoder_max_abs > tolerance or total.logits_max_abs > tolerance:
        raise ExportCheckError("export check",
                               f"exported graphs differ from PyTorch: {total.summary()} (tolerance {tolerance})")
    if min(total.greedy_equal, total.beam_equal) < min_agreement * total.images:
        raise ExportCheckError("export check", f"decoded sequences differ from PyTorch: {total.summary()}")
    return total
