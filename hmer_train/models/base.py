"""The model that pairs an encoder with a decoder of the step interface (``interface.py``), and
the registry of their types, built from the config's ``model`` section."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from hmer_train.config import ConfigError, ModelConfig
from hmer_train.models.comer import ComerDecoder
from hmer_train.models.comer_exact import ComerEncoder, ComerExactDecoder
from hmer_train.models.densenet import DenseNetEncoder, pad_to_stride
from hmer_train.models.interface import (  # noqa: F401 - the interface's names, where callers import them
    Decoder,
    Layout,
    Memory,
    State,
    expand_memory,
    masked_softmax,
    reorder_state,
    transformer_layout,
)
from hmer_train.models.wap import WapDecoder


def _architectures() -> tuple[dict[str, type], dict[str, type]]:
    """Encoder and decoder classes by ``type``."""
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
