"""The one step interface every decoder implements.

``encode(images, mask) -> memory``: everything that depends only on the image, computed once.
``init_state(memory) -> state`` and ``step(tokens, state, memory) -> (logits, attention, state)``:
one decoding step for a batch of hypotheses. ``state`` is a flat dict of named tensors whose
first dimension is the hypothesis; beam search reorders it generically by index, so the same
search code runs any decoder (and the ONNX runtime does the same with exported graphs).

The decoders (comer.py, comer_exact.py, wap.py) import this module; the model that pairs one
with an encoder, and the registry of types, are in base.py, which imports them.
"""

from __future__ import annotations

import torch
from torch import nn

State = dict[str, torch.Tensor]
Memory = dict[str, torch.Tensor]
#: Axis labels of memory/state tensors: "batch" (hypotheses), "height"/"width" (feature map),
#: "length" (height x width), "steps" (decoded so far); ints are fixed sizes.
Layout = dict[str, tuple[str | int, ...]]


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` with positions where ``mask`` is False set to zero weight."""
    scores = scores.masked_fill(~mask, -1e4)
    return torch.softmax(scores, dim=dim)


class Decoder(nn.Module):
    """Interface: see module docstring. ``teacher_forcing`` may be a faster parallel path.

    ``shares_memory``: ``step`` also takes memory with one row per image -- M rows for the N
    hypothesis rows, M dividing N, rows image-major (N / M per image, as beam search lays them
    out) -- so a beam's hypotheses read their image's memory instead of copies of it. Memory with
    one row per hypothesis (M = N) works for every decoder."""

    shares_memory = False

    def prepare(self, features: torch.Tensor, mask: torch.Tensor) -> Memory:
        raise NotImplementedError

    def init_state(self, memory: Memory) -> State:
        raise NotImplementedError

    def step(self, tokens: torch.Tensor, state: State, memory: Memory) -> tuple[torch.Tensor, torch.Tensor, State]:
        raise NotImplementedError

    def layout(self) -> Layout:
        """Axis labels of every memory and state tensor (exported graphs' dynamic axes)."""
        raise NotImplementedError

    def teacher_forcing(self, tokens: torch.Tensor, memory: Memory) -> torch.Tensor:
        """Logits (N, T, V) for input tokens (N, T); default: run ``step`` token by token."""
        state = self.init_state(memory)
        out = []
        for t in range(tokens.shape[1]):
            logits, _, state = self.step(tokens[:, t], state, memory)
            out.append(logits)
        return torch.stack(out, 1)

    def logprob(self, tokens: torch.Tensor, targets: torch.Tensor, memory: Memory) -> torch.Tensor:
        """log P(targets | image, tokens) per row (N,), by teacher forcing: every position at once
        where ``teacher_forcing`` is parallel. ``targets`` (N, T) is -1 past each sequence's end
        (``hmer_runtime.decoding.search.teacher_forced_inputs`` lays both out)."""
        logp = torch.log_softmax(self.teacher_forcing(tokens, memory).float(), -1)
        picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return torch.where(targets >= 0, picked, torch.zeros_like(picked)).sum(1)


def transformer_layout(layers: int, heads: int, head_dim: int) -> Layout:
    """Axes of a cached transformer decoder's tensors: the image mask, the position, and per layer
    ``i`` cross-attention keys/values ``ck{i}``/``cv{i}`` and the self-attention cache ``k{i}``/``v{i}``."""
    out: Layout = {"mask": ("batch", "height", "width"), "pos": ("batch",)}
    for i in range(layers):
        out[f"ck{i}"] = out[f"cv{i}"] = ("batch", heads, "length", head_dim)
        out[f"k{i}"] = out[f"v{i}"] = ("batch", heads, "steps", head_dim)
    return out


def expand_memory(memory: Memory, index: torch.Tensor) -> Memory:
    """Memory rows picked by ``index`` (e.g. each image repeated once per beam)."""
    return {k: v.index_select(0, index) for k, v in memory.items()}


def reorder_state(state: State, index: torch.Tensor) -> State:
    """State rows picked by ``index``: generic over whatever names the decoder uses."""
    return {k: v.index_select(0, index) for k, v in state.items()}
