"""The no-cache baseline decoder of ``hmer-bench``: the whole prefix re-run at every step.

How research code and other ONNX ports decode; exported on the fly from a checkpoint, for
decoders with a parallel teacher-forcing path (``comer``, and ``comer-exact``, which then decodes
as CoMER's own code does). Not part of an exported model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hmer_export.graphs import export_teacher_forced
from hmer_train.models.base import HMERModel


class PrefixGraph(nn.Module):
    """tokens (N, T), memory.* -> logits (N, V) of the last position, recomputing the whole prefix:
    how decoders without a cache run (the research code, other ONNX ports). Benchmark baseline only."""

    def __init__(self, model: HMERModel, memory_names: list[str]):
        super().__init__()
        self.model = model
        self.memory_names = memory_names

    def forward(self, tokens: torch.Tensor, *tensors: torch.Tensor):
        memory = dict(zip(self.memory_names, tensors))
        return self.model.decoder.teacher_forcing(tokens, memory)[:, -1]

    @staticmethod
    def example(images: int) -> tuple[tuple, list[str], list[str], dict]:
        """(example args, input names, output names, dynamic axes) besides the memory."""
        tokens = torch.ones(images, 3, dtype=torch.long)
        return (tokens,), ["tokens"], ["logits"], {"tokens": {0: "batch", 1: "steps"}, "logits": {0: "batch"}}


def export_prefix_graph(model: HMERModel, path: Path) -> list[str]:
    """Write the no-cache decoder to ``path``; returns its memory input names."""
    return export_teacher_forced(model, PrefixGraph, path)
