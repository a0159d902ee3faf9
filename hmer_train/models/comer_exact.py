"""CoMER's architecture exactly (Zhao & Gao, ECCV 2022), so checkpoints trained with CoMER's own code
(and the codebases sharing its modules) run through hmer's step contract, export and runtime.

Differences from hmer's own ``comer`` decoder, all as CoMER has them:

* encoder: DenseNet-B with post-activation bottlenecks (conv -> BN -> ReLU), transitions that
  pool with ``ceil_mode`` (any image size, no padding to a stride), dropout 0.2, a final BN;
  then a 1x1 feature projection, a 2-D sinusoidal encoding (x before y, sin/cos interleaved),
  LayerNorm;
* decoder input: LayerNorm'd token embedding + interleaved 1-D sinusoid, then LayerNorm;
* post-norm layers (self-attention, cross-attention, feed-forward, each ``x = norm(x + f(x))``);
* one attention refinement module (ARM) shared by layers 1.., fed with the exclusive running
  sums of the previous layer's final attention (cross coverage) and of the layer's own
  unrefined attention (self coverage), conv 5x5 -> ReLU -> 1x1 -> BatchNorm over real positions.

Masks follow hmer's convention (True on real pixels). Cached state per layer ``i``: ``k{i}``/``v{i}``
(self-attention keys/values so far) and, for ``i >= 1``, ``cp{i}``/``cs{i}`` (N, heads, h, w): the
two coverage sums before the current position; ``pos`` (N,) is the position.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hmer_train.models.interface import Decoder, Layout, Memory, State, masked_softmax, transformer_layout


def interleaved_sinusoid(pos: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(...,) positions -> (..., dim) features [sin f0, cos f0, sin f1, cos f1, ...] (CoMER's order)."""
    freq = temperature ** (-torch.arange(0, dim, 2, dtype=torch.float32, device=pos.device) / dim)
    angles = pos.float().unsqueeze(-1) * freq
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)


def image_posenc(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, h, w) real-pixel mask -> (N, h, w, dim): column then row position, each normalised to
    the image's real extent and scaled to [0, 2 pi]."""
    m = mask.float()
    y = m.cumsum(1)
    x = m.cumsum(2)
    y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
    x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
    return torch.cat([interleaved_sinusoid(x, dim // 2, 10000.0), interleaved_sinusoid(y, dim // 2, 10000.0)], -1)


# --- encoder ---------------------------------------------------------------------------------------

class PostActBottleneck(nn.Module):
    def __init__(self, channels: int, growth: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4 * growth, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(growth)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dropout(F.relu(self.bn1(self.conv1(x))))
        out = self.dropout(F.relu(self.bn2(self.conv2(out))))
        return torch.cat([x, out], 1)


class PostActTransition(nn.Module):
    def __init__(self, channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.dropout(F.relu(self.bn1(self.conv1(x)))), 2, ceil_mode=True)


class ComerEncoder(nn.Module):
    """CoMER's DenseNet-B: image (N, 1, H, W), any H and W -> features (N, C, ceil(H/16), ceil(W/16))."""

    input_multiple = 1  # ceil-mode pooling takes any size; padding would change border features

    def __init__(self, growth: int = 24, depth: int = 16, reduction: float = 0.5, dropout: float = 0.2):
        super().__init__()
        channels = 2 * growth
        self.conv1 = nn.Conv2d(1, channels, 7, stride=2, padding=3, bias=False)
        self.norm1 = nn.BatchNorm2d(channels)
        blocks: list[nn.Module] = []
        for block in range(3):
            dense = []
            for _ in range(depth):
                dense.append(PostActBottleneck(channels, growth, dropout))
                channels += growth
            blocks.append(nn.Sequential(*dense))
            if block < 2:
                out = int(math.floor(channels * reduction))
                blocks.append(PostActTransition(channels, out, dropout))
                channels = out
        self.dense1, self.trans1, self.dense2, self.trans2, self.dense3 = blocks
        self.post_norm = nn.BatchNorm2d(channels)
        self.out_channels = channels

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.norm1(self.conv1(images))), 2, ceil_mode=True)
        x = self.trans1(self.dense1(x))
        x = self.trans2(self.dense2(x))
        x = self.post_norm(self.dense3(x))
        return x, mask[:, ::16, ::16]  # each of the four halvings keeps rows/columns 0, 2, 4, ...


# --- decoder ---------------------------------------------------------------------------------------

class Refinement(nn.Module):
    """ARM: the coverage sums (B, 2 heads, h, w) -> what is subtracted from the attention logits."""

    def __init__(self, heads: int, dc: int = 32):
        super().__init__()
        self.conv = nn.Conv2d(2 * heads, dc, 5, padding=2)
        self.proj = nn.Conv2d(dc, heads, 1, bias=False)
        self.norm = nn.BatchNorm1d(heads)

    def forward(self, coverage: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """coverage (B, 2H, h, w), mask (B, h, w) True on real positions -> (B, H, h, w)."""
        real = mask[:, None].to(coverage.dtype)
        cov = self.proj(F.relu(self.conv(coverage)) * real)
        if self.training:  # batch statistics over real positions only, as CoMER's masked BatchNorm
            flat = cov.permute(0, 2, 3, 1)
            picked = self.norm(flat[mask])
            flat = flat.masked_scatter(mask[..., None], picked)
            return flat.permute(0, 3, 1, 2)
        # eval: the running statistics make it an affine map per head (padded positions are
        # masked out of the softmax anyway)
        scale = self.norm.weight / torch.sqrt(self.norm.running_var + self.norm.eps)
        shift = self.norm.bias - self.norm.running_mean * scale
        return (cov * scale[:, None, None] + shift[:, None, None]) * real


class ExactLayer(nn.Module):
    """One post-norm CoMER decoder layer; ``forward`` teacher-forces all positions, ``step`` runs one."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.heads, self.hd = heads, d // heads
        self.self_in = nn.Linear(d, 3 * d)
        self.self_out = nn.Linear(d, d)
        self.cross_in = nn.Linear(d, 3 * d)  # rows: query, key, value (keys/values are in memory)
        self.cross_out = nn.Linear(d, d)
        self.linear1, self.linear2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)

    def heads_of(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, d) -> (N, H, T, hd)
        return x.unflatten(-1, (self.heads, self.hd)).transpose(1, 2)

    def memory_kv(self, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.heads * self.hd
        k, v = F.linear(mem, self.cross_in.weight[d:], self.cross_in.bias[d:]).chunk(2, dim=-1)
        return self.heads_of(k), self.heads_of(v)

    def _cross_query(self, x: torch.Tensor) -> torch.Tensor:
        d = self.heads * self.hd
        return self.heads_of(F.linear(x, self.cross_in.weight[:d], self.cross_in.bias[:d]))

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm3(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))

    def forward(self, x, self_mask, ck, cv, mask, arm: Refinement | None, prev_attn):
        """x (N, T, d); self_mask (N, 1, T, T) True where a query may attend; ck/cv (N, H, L, hd);
        mask (N, h, w). Returns x and the final cross-attention (N, H, T, L)."""
        n, t, _ = x.shape
        q, k, v = (self.heads_of(z) for z in self.self_in(x).chunk(3, dim=-1))
        sa = masked_softmax(q @ k.transpose(-1, -2) / math.sqrt(self.hd), self_mask) @ v
        x = self.norm1(x + self.dropout(self.self_out(sa.transpose(1, 2).flatten(2))))
        scores = self._cross_query(x) @ ck.transpose(-1, -2) / math.sqrt(self.hd)  # (N, H, T, L)
        flat = mask.flatten(1)[:, None, None, :]
        attn = masked_softmax(scores, flat)
        if arm is not None:
            both = torch.cat([prev_attn, attn], 1)  # (N, 2H, T, L)
            before = both.cumsum(2) - both  # sums over earlier positions only
            cov = arm(before.transpose(1, 2).reshape(n * t, -1, *mask.shape[1:]),
                      mask.repeat_interleave(t, 0))
            attn = masked_softmax(scores - cov.view(n, t, self.heads, -1).transpose(1, 2), flat)
        x = self.norm2(x + self.dropout(self.cross_out((attn @ cv).transpose(1, 2).flatten(2))))
        return self._ffn(x), attn

    def step(self, x, k_cache, v_cache, ck, cv, mask, arm: Refinement | None, coverage):
        """x (N, 1, d); coverage (N, 2H, h, w) before this position, or None without ARM.
        Returns x, the grown caches, the unrefined and the final attention (N, H, 1, L)."""
        q, k, v = (self.heads_of(z) for z in self.self_in(x).chunk(3, dim=-1))
        k_cache, v_cache = torch.cat([k_cache, k], 2), torch.cat([v_cache, v], 2)
        sa = torch.softmax(q @ k_cache.transpose(-1, -2) / math.sqrt(self.hd), -1) @ v_cache
        x = self.norm1(x + self.dropout(self.self_out(sa.transpose(1, 2).flatten(2))))
        scores = self._cross_query(x) @ ck.transpose(-1, -2) / math.sqrt(self.hd)
        flat = mask.flatten(1)[:, None, None, :]
        raw = attn = masked_softmax(scores, flat)
        if arm is not None:
            attn = masked_softmax(scores - arm(coverage, mask).flatten(2)[:, :, None, :], flat)
        x = self.norm2(x + self.dropout(self.cross_out((attn @ cv).transpose(1, 2).flatten(2))))
        return self._ffn(x), k_cache, v_cache, raw, attn


class ComerExactDecoder(Decoder):
    def __init__(self, in_channels: int, vocab_size: int, d_model: int = 256, heads: int = 8, layers: int = 3,
                 ffn: int = 1024, dropout: float = 0.3, dc: int = 32):
        super().__init__()
        self.d, self.heads, self.n_layers = d_model, heads, layers
        self.feature_proj = nn.Linear(in_channels, d_model)
        self.feature_norm = nn.LayerNorm(d_model)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.embed_norm = nn.LayerNorm(d_model)
        self.input_norm = nn.LayerNorm(d_model)
        self.layers = nn.ModuleList(ExactLayer(d_model, heads, ffn, dropout) for _ in range(layers))
        self.arm = Refinement(heads, dc)
        self.classifier = nn.Linear(d_model, vocab_size)

    def features(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoder output (N, h, w, d): projected, position-encoded, normalised (CoMER's encoder output)."""
        x = self.feature_proj(features.permute(0, 2, 3, 1))
        return self.feature_norm(x + image_posenc(mask, self.d))

    def prepare(self, features: torch.Tensor, mask: torch.Tensor) -> Memory:
        mem = self.features(features, mask).flatten(1, 2)
        out: Memory = {"mask": mask}
        for i, layer in enumerate(self.layers):
            out[f"ck{i}"], out[f"cv{i}"] = layer.memory_kv(mem)
        return out

    def layout(self) -> Layout:
        out = transformer_layout(self.n_layers, self.heads, self.d // self.heads)
        for i in range(1, self.n_layers):
            out[f"cp{i}"] = out[f"cs{i}"] = ("batch", self.heads, "height", "width")
        return out

    def init_state(self, memory: Memory) -> State:
        mask = memory["mask"]
        n, dtype, dev = mask.shape[0], memory["ck0"].dtype, mask.device
        state: State = {"pos": torch.zeros(n, dtype=torch.long, device=dev)}
        for i in range(self.n_layers):
            state[f"k{i}"] = torch.zeros(n, self.heads, 0, self.d // self.heads, dtype=dtype, device=dev)
            state[f"v{i}"] = torch.zeros_like(state[f"k{i}"])
            if i:
                state[f"cp{i}"] = torch.zeros(n, self.heads, *mask.shape[1:], dtype=dtype, device=dev)
                state[f"cs{i}"] = torch.zeros_like(state[f"cp{i}"])
        return state

    def _inputs(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.input_norm(self.embed_norm(self.embed(tokens)) + interleaved_sinusoid(pos, self.d))

    def teacher_forcing(self, tokens: torch.Tensor, memory: Memory, pad_id: int | None = 0) -> torch.Tensor:
        n, t = tokens.shape
        mask = memory["mask"]
        x = self._inputs(tokens, torch.arange(t, device=tokens.device)[None])
        self_mask = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()[None, None]
        if pad_id is not None:  # padded positions are never attended to, as in CoMER
            self_mask = self_mask & (tokens != pad_id)[:, None, None, :]
        attn = None
        for i, layer in enumerate(self.layers):
            x, attn = layer(x, self_mask, memory[f"ck{i}"], memory[f"cv{i}"], mask, self.arm if i else None, attn)
        return self.classifier(x)

    def step(self, tokens: torch.Tensor, state: State, memory: Memory):
        mask = memory["mask"]
        x = self._inputs(tokens[:, None], state["pos"][:, None])
        new: State = {"pos": state["pos"] + 1}
        attn = None
        for i, layer in enumerate(self.layers):
            coverage = torch.cat([state[f"cp{i}"], state[f"cs{i}"]], 1) if i else None
            x, new[f"k{i}"], new[f"v{i}"], raw, final = layer.step(
                x, state[f"k{i}"], state[f"v{i}"], memory[f"ck{i}"], memory[f"cv{i}"], mask,
                self.arm if i else None, coverage)
            if i:
                new[f"cp{i}"] = state[f"cp{i}"] + attn.view_as(state[f"cp{i}"])
                new[f"cs{i}"] = state[f"cs{i}"] + raw.view_as(state[f"cs{i}"])
            attn = final
        logits = self.classifier(x)[:, 0]
        return logits, attn.mean(1).view_as(mask), new
