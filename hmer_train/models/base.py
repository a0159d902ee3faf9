"""The one step interface every decoder implements, and the model that pairs it with the encoder.

``encode(images, mask) -> memory``: everything that depends only on the image, computed once.
``init_state(memory) -> state`` and ``step(tokens, state, memory) -> (logits, attention, state)``:
one decoding step for a batch of hypotheses. ``state`` is a flat dict of named tensors whose
first dimension is the hypothesis; beam search reorders it generically by index, so the same
search code runs any decoder (and the ONNX runtime does the same with exported graphs).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from hmer_train.config import ConfigError, ModelConfig
from hmer_train.models.densenet import DenseNetEncoder, pad_to_stride

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


def _architectures() -> tuple[dict[str, type], dict[str, type]]:
    """Encoder and decoder classes by ``type`` (imported here: they import this module)."""
    from hmer_train.models.comer import ComerDecoder
    from hmer_train.models.comer_exact import ComerEncoder, ComerExactDecoder
    from hmer_train.models.wap import WapDecoder

    return ({"densenet": DenseNetEncoder, "comer": ComerEncoder},
            {"comer": ComerDecoder, "wap": WapDecoder, "comer-exact": ComerExactDecoder})


def resolve_architecture(arch: ModelConfig | dict) -> ModelConfig:
    """``arch`` with every option its classes take written out (their signatures' defaults for
    those left out), so a checkpoint rebuilds the same model whatever the defaults become.
    ConfigError names an unknown type or option."""
    if isinstance(arch, dict):
        arch = ModelConfig(**arch)
    resolved = []
    for part, given, classes, default, skip in (
            ("encoder", arch.encoder, _architectures()[0], "densenet", ()),
            ("decoder", arch.decoder, _architectures()[1], "comer", ("in_channels", "vocab_size"))):
        options = dict(given)
        kind = options.pop("type", default)
        if kind not in classes:
            raise ConfigError(f"model.{part}.type", f"unknown {part} type {kind!r} (choose from {sorted(classes)})")
        params = {name: p for name, p in inspect.signature(classes[kind]).parameters.items() if name not in skip}
        for name in options:
            if name not in params:
                raise ConfigError(f"model.{part}", f"unknown option '{name}' for a {kind} {part} "
                                                   f"(it takes {', '.join(params)})")
        missing = [name for name, p in params.items() if p.default is p.empty and name not in options]
        if missing:
            raise ConfigError(f"model.{part}", f"a {kind} {part} needs '{missing[0]}'")
        resolved.append({"type": kind, **{name: options.get(name, p.default) for name, p in params.items()}})
    return ModelConfig(*resolved)


class HMERModel(nn.Module):
    """Encoder + decoder, rebuilt from ``arch`` (``model`` of a config, or the plain dict a
    checkpoint stores); ``self.arch`` is it in full (:func:`resolve_architecture`)."""

    def __init__(self, arch: ModelConfig | dict, vocab_size: int):
        super().__init__()
        self.arch = resolve_architecture(arch)
        enc, dec = dict(self.arch.encoder), dict(self.arch.decoder)
        encoders, decoders = _architectures()
        self.encoder = encoders[enc.pop("type")](**enc)
        self.kind = dec.pop("type")
        self.vocab_size = vocab_size
        self.decoder: Decoder = decoders[self.kind](self.encoder.out_channels, vocab_size, **dec)

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> Memory:
        """images (N, 1, H, W) float with ink 1.0; mask (N, H, W) bool, True on real pixels."""
        if self.input_multiple > 1:
            images, mask = pad_to_stride(images, mask)
        features, fmask = self.encoder(images, mask)
        return self.decoder.prepare(features, fmask)

    @property
    def input_multiple(self) -> int:
        """What image sides are padded to before encoding (model.json ``stride``): 16 for hmer's
        DenseNet, 1 for CoMER's, whose ceil-mode pooling takes any size."""
        return getattr(self.encoder, "input_multiple", 16)

    def init_state(self, memory: Memory) -> State:
        return self.decoder.init_state(memory)

    def step(self, tokens: torch.Tensor, state: State, memory: Memory):
        return self.decoder.step(tokens, state, memory)

    def forward(self, images: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor,
                image_index: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (N', T, V); ``image_index`` maps each sequence to its image so an
        image is encoded once for both reading directions."""
        memory = self.encode(images, mask)
        if image_index is not None:
            memory = expand_memory(memory, image_index)
        return self.decoder.teacher_forcing(tokens, memory)
