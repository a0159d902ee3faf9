"""CoMER-style transformer decoder with coverage attention refinement (ARM), decoded with a cache.

Each layer: causal self-attention -> cross-attention to the image whose logits are reduced by a
refinement computed from the layer's *coverage* (the sum of its earlier, unrefined attention
maps, passed through a conv) -> feed-forward. Using unrefined maps for coverage keeps the
teacher-forced path parallel over time, and ``step`` reproduces it exactly.

State per layer ``l``: ``k{l}``/``v{l}`` (N, heads, t, head_dim) self-attention cache, growing one
position per step, and ``cov{l}`` (N, heads, h, w) coverage; ``pos`` (N,) int64 is the step position.
Keeping the position as a tensor (not the cache length read as a Python int) keeps exported
step graphs free of frozen constants.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hmer_train.models.interface import Decoder, Layout, Memory, State, masked_softmax, transformer_layout
from hmer_train.models.posenc import image_posenc, sinusoid


class Refinement(nn.Module):
    """ARM: coverage (B, heads, h, w) -> amount subtracted from the attention logits."""

    def __init__(self, heads: int, channels: int = 32, kernel: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(heads, channels, kernel, padding=kernel // 2)
        self.proj = nn.Conv2d(channels, heads, 1)

    def forward(self, coverage: torch.Tensor) -> torch.Tensor:
        return self.proj(F.relu(self.conv(coverage)))


class ComerLayer(nn.Module):
    """One decoder layer. ``forward`` reads all positions at once (teacher forcing); ``step`` reads
    one position against the layer's cache and gives the same numbers as ``forward`` does there."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float, arm_channels: int, arm_kernel: int):
        super().__init__()
        self.d, self.heads, self.hd = d, heads, d // heads
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.self_out = nn.Linear(d, d)
        self.cross_q = nn.Linear(d, d)
        self.cross_out = nn.Linear(d, d)
        self.arm = Refinement(heads, arm_channels, arm_kernel)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.dropout = nn.Dropout(dropout)

    def split(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, d) -> (N, H, T, hd)
        n, t, _ = x.shape
        return x.view(n, t, self.heads, self.hd).transpose(1, 2)

    def merge(self, x: torch.Tensor) -> torch.Tensor:  # (N, H, T, hd) -> (N, T, d)
        n, _, t, _ = x.shape
        return x.transpose(1, 2).reshape(n, t, self.heads * self.hd)

    def forward(self, x: torch.Tensor, ck: torch.Tensor, cv: torch.Tensor, mask: torch.Tensor,
                causal: torch.Tensor) -> torch.Tensor:
        """x (N, T, d) -> (N, T, d); ck/cv (N, H, L, hd) the image's keys and values, mask (N, h, w)."""
        n, t, _ = x.shape
        hh, ww = mask.shape[1:]
        flat_mask = mask.flatten(1)[:, None, None, :]
        q, k, v = (self.split(z) for z in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        sa = masked_softmax((q @ k.transpose(-1, -2)) / math.sqrt(self.hd), causal) @ v
        x = x + self.dropout(self.self_out(self.merge(sa)))
        scores = (self.split(self.cross_q(self.norm2(x))) @ ck.transpose(-1, -2)) / math.sqrt(self.hd)
        raw = masked_softmax(scores, flat_mask)  # (N, H, T, L)
        # Coverage before query t = sum of the raw attention of queries < t.
        cov = (torch.cumsum(raw, dim=2) - raw).transpose(1, 2).reshape(n * t, self.heads, hh, ww)
        refine = self.arm(cov).view(n, t, self.heads, hh * ww)
        attn = masked_softmax(scores - refine.transpose(1, 2), flat_mask)
        x = x + self.dropout(self.cross_out(self.merge(attn @ cv)))
        return x + self.dropout(self.ffn(self.norm3(x)))

    def step(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cov: torch.Tensor,
             ck: torch.Tensor, cv: torch.Tensor, flat_mask: torch.Tensor):
        """One position: x (N, 1, d) against the self-attention cache (N, H, t, hd) and the coverage
        (N, H, h, w) -> (x, caches with this position appended, new coverage, refined attention
        (N, H, 1, L)). The image's keys and values ck/cv (M, H, L, hd) and ``flat_mask`` (M, 1, 1, L)
        may hold one row per image (``Decoder.shares_memory``): the N / M queries of an image are
        read against its keys as one matrix product."""
        # Written for T = 1, so splitting and merging heads are reshapes to constant shapes: the
        # exported step graph then carries no shape arithmetic, which was about half of its nodes
        # and a third of its kernel time when written like forward. x stays (N, 1, d): 2-D
        # linears would export as Gemm, which dynamic int8 quantization skips.
        heads, hd, scale = self.heads, self.hd, math.sqrt(self.hd)
        q, k, v = (z.reshape(-1, heads, 1, hd) for z in self.qkv(self.norm1(x)).split(self.d, dim=-1))
        kc = torch.cat([k_cache, k], dim=2)
        vc = torch.cat([v_cache, v], dim=2)
        sa = torch.softmax((q @ kc.transpose(-1, -2)) / scale, dim=-1) @ vc
        x = x + self.dropout(self.self_out(sa.reshape(-1, 1, self.d)))
        m = ck.shape[0]  # images; each has N / M query rows, image-major
        cq = self.cross_q(self.norm2(x)).reshape(-1, heads, hd).unflatten(0, (m, -1)).transpose(1, 2)
        scores = (cq @ ck.transpose(-1, -2)) / scale  # (M, H, N / M, L)
        raw = masked_softmax(scores, flat_mask)
        refine = self.arm(cov).flatten(2).unflatten(0, (m, -1)).transpose(1, 2)
        attn = masked_softmax(scores - refine, flat_mask)
        x = x + self.dropout(self.cross_out((attn @ cv).transpose(1, 2).reshape(-1, 1, self.d)))
        x = x + self.dropout(self.ffn(self.norm3(x)))
        raw, attn = (a.transpose(1, 2).flatten(0, 1).unsqueeze(2) for a in (raw, attn))  # (N, H, 1, L)
        return x, kc, vc, cov + raw.reshape_as(cov), attn


class ComerDecoder(Decoder):
    shares_memory = True

    def __init__(self, in_channels: int, vocab_size: int, d_model: int = 256, heads: int = 8,
                 layers: int = 3, ffn: int = 1024, dropout: float = 0.3, arm_channels: int = 32,
                 arm_kernel: int = 5, embed_norm: bool = True):
        super().__init__()
        self.d, self.heads, self.n_layers = d_model, heads, layers
        self.embed = nn.Embedding(vocab_size, d_model)
        # CoMER normalises token embeddings so they and the positional encoding have comparable
        # size. embed_norm=False is the earlier scheme: N(0, 1) embeddings x sqrt(d) have norm ~d
        # (256) against sqrt(d/2) (11) for the sinusoid; kept so checkpoints trained with it still
        # load (see checkpoint._upgrade).
        self.embed_norm = nn.LayerNorm(d_model) if embed_norm else None
        self.feat_proj = nn.Linear(in_channels, d_model)
        self.feat_norm = nn.LayerNorm(d_model)
        self.layers = nn.ModuleList(ComerLayer(d_model, heads, ffn, dropout, arm_channels, arm_kernel)
                                    for _ in range(layers))
        self.cross_kv = nn.ModuleList(nn.Linear(d_model, 2 * d_model) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.classifier = nn.Linear(d_model, vocab_size)
        self.dropout = nn.Dropout(dropout)

    def prepare(self, features: torch.Tensor, mask: torch.Tensor) -> Memory:
        mem = self.feat_proj(features.flatten(2).transpose(1, 2))
        mem = self.feat_norm(mem + image_posenc(mask, self.d).flatten(1, 2))
        out: Memory = {"mask": mask}
        for i, kv in enumerate(self.cross_kv):
            k, v = kv(mem).chunk(2, dim=-1)
            out[f"ck{i}"] = self.layers[i].split(k)
            out[f"cv{i}"] = self.layers[i].split(v)
        return out

    def layout(self) -> Layout:
        out = transformer_layout(self.n_layers, self.heads, self.d // self.heads)
        for i in range(self.n_layers):
            out[f"cov{i}"] = ("batch", self.heads, "height", "width")
        return out

    def init_state(self, memory: Memory) -> State:
        mask = memory["mask"]
        n = mask.shape[0]
        dtype = memory["ck0"].dtype
        hd = self.d // self.heads
        state: State = {"pos": torch.zeros(n, dtype=torch.long, device=mask.device)}
        for i in range(self.n_layers):
            state[f"k{i}"] = torch.zeros(n, self.heads, 0, hd, dtype=dtype, device=mask.device)
            state[f"v{i}"] = torch.zeros(n, self.heads, 0, hd, dtype=dtype, device=mask.device)
            state[f"cov{i}"] = torch.zeros(n, self.heads, *mask.shape[1:], dtype=dtype, device=mask.device)
        return state

    def _embed(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """tokens (N, T), positions broadcastable to (N, T)."""
        e = self.embed(tokens)
        e = self.embed_norm(e) if self.embed_norm is not None else e * math.sqrt(self.d)
        return self.dropout(e + sinusoid(pos, self.d))

    def step(self, tokens: torch.Tensor, state: State, memory: Memory):
        mask = memory["mask"]
        flat_mask = mask.flatten(1)[:, None, None, :]
        x = self._embed(tokens[:, None], state["pos"][:, None])  # (N, 1, d)
        new: State = {"pos": state["pos"] + 1}
        attn = None
        for i, layer in enumerate(self.layers):
            x, new[f"k{i}"], new[f"v{i}"], new[f"cov{i}"], attn = layer.step(
                x, state[f"k{i}"], state[f"v{i}"], state[f"cov{i}"], memory[f"ck{i}"], memory[f"cv{i}"], flat_mask)
        logits = self.classifier(self.norm(x)).reshape(-1, self.classifier.out_features)
        return logits, attn.mean(1).reshape(-1, *mask.shape[1:]), new

    def teacher_forcing(self, tokens: torch.Tensor, memory: Memory) -> torch.Tensor:
        t = tokens.shape[1]
        x = self._embed(tokens, torch.arange(t, device=tokens.device)[None])
        causal = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
        for i, layer in enumerate(self.layers):
            x = layer(x, memory[f"ck{i}"], memory[f"cv{i}"], memory["mask"], causal)
        return self.classifier(self.norm(x))
