"""WAP/DWAP-style decoder: two GRUs around coverage attention (Zhang et al.), one step at a time.

State: ``h`` (N, hidden) and ``coverage`` (N, h, w), the sum of all earlier attention maps.
"""

from __future__ import annotations

import torch
from torch import nn

from hmer_train.models.interface import Decoder, Layout, Memory, State, masked_softmax


class WapDecoder(Decoder):
    def __init__(self, in_channels: int, vocab_size: int, embed: int = 256, hidden: int = 256,
                 attention: int = 512, coverage_channels: int = 256, coverage_kernel: int = 11,
                 dropout: float = 0.2):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed)
        self.init_h = nn.Linear(in_channels, hidden)
        self.gru1 = nn.GRUCell(embed, hidden)
        self.gru2 = nn.GRUCell(in_channels, hidden)
        self.key = nn.Conv2d(in_channels, attention, 1)
        self.query = nn.Linear(hidden, attention, bias=False)
        self.cov_conv = nn.Conv2d(1, coverage_channels, coverage_kernel, padding=coverage_kernel // 2)
        self.cov_proj = nn.Linear(coverage_channels, attention, bias=False)
        self.score = nn.Linear(attention, 1)
        self.out_embed = nn.Linear(embed, embed)
        self.out_hidden = nn.Linear(hidden, embed)
        self.out_context = nn.Linear(in_channels, embed)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embed // 2, vocab_size)
        self.sizes = (in_channels, hidden, attention)

    def layout(self) -> Layout:
        c, hidden, a = self.sizes
        return {"feats": ("batch", "length", c), "keys": ("batch", "length", a), "mask": ("batch", "height", "width"),
                "h": ("batch", hidden), "coverage": ("batch", "height", "width")}

    def prepare(self, features: torch.Tensor, mask: torch.Tensor) -> Memory:
        keys = self.key(features).flatten(2).transpose(1, 2)  # (N, L, A)
        feats = features.flatten(2).transpose(1, 2)  # (N, L, C)
        return {"feats": feats, "keys": keys, "mask": mask}

    def init_state(self, memory: Memory) -> State:
        m = memory["mask"].flatten(1).unsqueeze(-1).to(memory["feats"].dtype)
        mean = (memory["feats"] * m).sum(1) / m.sum(1).clamp(min=1)
        return {"h": torch.tanh(self.init_h(mean)), "coverage": torch.zeros_like(memory["mask"], dtype=mean.dtype)}

    def step(self, tokens: torch.Tensor, state: State, memory: Memory):
        mask = memory["mask"]
        n, h, w = mask.shape
        e = self.embed(tokens)
        h1 = self.gru1(e, state["h"])
        cov = self.cov_conv(state["coverage"].unsqueeze(1)).flatten(2).transpose(1, 2)  # (N, L, Q)
        energy = torch.tanh(memory["keys"] + self.query(h1).unsqueeze(1) + self.cov_proj(cov))
        alpha = masked_softmax(self.score(energy).squeeze(-1), mask.flatten(1))  # (N, L)
        context = torch.bmm(alpha.unsqueeze(1), memory["feats"]).squeeze(1)
        h2 = self.gru2(context, h1)
        out = self.out_embed(e) + self.out_hidden(h2) + self.out_context(context)
        out = out.view(n, -1, 2).amax(-1)  # maxout of pairs
        logits = self.classifier(self.dropout(out))
        attn = alpha.view(n, h, w)
        return logits, attn, {"h": h2, "coverage": state["coverage"] + attn}
