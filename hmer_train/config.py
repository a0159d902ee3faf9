"""Training configuration: one frozen dataclass per section, YAML loading, CLI overrides.

A run's config is a :class:`Config`. Its sections are the dataclasses that use them -- the
runtime's ``RenderConfig``, ``PreprocessConfig`` and ``DecodeOptions``, training's
:class:`TrainConfig` and ``AugmentConfig`` -- and every default is written once, in those classes
(the architecture's in the model classes' signatures, see ``hmer_train.models.base``). Unknown
keys are refused with their dotted name. ``config.yaml`` in the repository root documents every
key; a test keeps it equal to ``Config()``.

A checkpoint stores :meth:`Config.to_dict`; :meth:`Config.from_dict` reads it back, an older
checkpoint's included: a key added since takes its section's default (``train.augment``'s are
off, so an old run resumes with the augmentation it had).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.engine.reading import Reading
from hmer_runtime.errors import HmerError
from hmer_runtime.inputs.preprocess import PreprocessConfig
from hmer_runtime.inputs.render import RenderConfig


class ConfigError(HmerError):
    pass


@dataclass(frozen=True)
class ModelConfig:
    """``model``: the architecture. ``encoder`` and ``decoder`` are the keyword arguments of the
    classes their ``type`` names (``hmer_train.models.base.ENCODERS``/``DECODERS``), whose
    signatures hold the defaults; a run's checkpoint records them in full
    (``hmer_train.models.base.resolve_architecture``)."""

    encoder: dict = field(default_factory=lambda: {"type": "densenet"})
    decoder: dict = field(default_factory=lambda: {"type": "comer"})


@dataclass(frozen=True)
class AugmentConfig:
    """``train.augment``: ranges of each random change (0 or an empty range: off); what each does
    is in ``hmer_train.augment``. The class defaults are all off; the recipe's are ``TrainConfig``'s."""

    scale: tuple[float, float] = (1.0, 1.0)  # symbol size factor, log-uniform (CoMER: 0.7-1.4)
    rotate_deg: float = 0.0  # uniform in +-
    shear: float = 0.0  # slant, x += shear * y, uniform in +-
    stroke_jitter: float = 0.0  # image samples: probability of a 3 px thicker or thinner pen
    ink: bool = False  # ink samples are augmented as ink and rendered again (the fields below)
    aspect: float = 0.0  # width factor exp(U(+-aspect))
    stroke_shift: float = 0.0  # each stroke moves N(0, this) symbol sizes in x and y
    stroke_scale: float = 0.0  # each stroke's size changes by exp(N(0, this)) about its centre
    elastic: float = 0.0  # smooth warp, its largest displacement in symbol sizes
    pen_width: tuple[float, float] = (1.0, 1.0)  # pen width factor, uniform
    blur: float = 0.0  # probability of a light Gaussian blur (sigma 0.3-0.8 px)
    contrast: float = 0.0  # probability of a fainter pen on greyer paper
    noise: float = 0.0  # probability of Gaussian pixel noise
    image: float = 0.0  # ink samples: probability that the render also gets the image-level changes

    def __post_init__(self):
        for name in ("scale", "pen_width"):
            value = tuple(getattr(self, name))
            if len(value) != 2 or not 0 < value[0] <= value[1]:
                raise ValueError(f"{name} must be [low, high] with 0 < low <= high, not {list(value)}")
            object.__setattr__(self, name, value)

    @property
    def active(self) -> bool:
        return self != AugmentConfig()


@dataclass(frozen=True)
class TrainConfig:
    """``train``: optimisation, batching, validation and augmentation (config.yaml says what each does)."""

    batch_size: int = 16
    max_pixels: int = 800_000
    accumulate: int = 1
    lr: float = 0.0005
    weight_decay: float = 0.0001
    warmup_steps: int = 500
    epochs: int = 100
    max_steps: int | None = None
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    ema: float | None = 0.999
    amp: str = "bf16"
    seed: int = 0
    bidirectional: bool = True
    max_tokens: int = 200
    threads: int | None = None
    log_every: int = 20
    workers: int = 1
    pad_to: int = 16
    val_every: int = 1
    val_max: int | None = None
    keep_validated: bool = False
    extra_ratio: float = 0.0
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(
        scale=(0.7, 1.4), rotate_deg=3.0, shear=0.1, stroke_jitter=0.3, ink=True, aspect=0.15, stroke_shift=0.04,
        stroke_scale=0.08, elastic=0.1, pen_width=(0.85, 1.2), blur=0.2))

    def __post_init__(self):
        for name in ("batch_size", "max_pixels", "accumulate", "epochs", "log_every", "pad_to", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not self.extra_ratio >= 0:
            raise ValueError(f"extra_ratio must be 0 or more, not {self.extra_ratio}")


@dataclass(frozen=True)
class Config:
    """A training run: where its data and checkpoints are, and each section's settings."""

    dataset: str = "CROHME"
    data_roots: tuple[str, ...] = ("datasets", "../shared/data")
    train_split: str = "train"
    #: More training sources (InkML folders or archives, e.g. ``hmer-data synth`` output), added to
    #: ``train_split``'s expressions; validation and test splits stay the dataset's own.
    train_extra: tuple[str, ...] = ()
    val_split: str | None = "2013"
    test_splits: tuple[str, ...] = ("2014",)
    cache_dir: str | None = None
    out: str = "checkpoints"
    checkpoint: str | None = None
    #: Weights to start a new run from (a checkpoint; tensors of another shape keep their fresh
    #: initialisation). Unlike --resume, the step, optimiser and schedule start anew.
    init: str | None = None
    device: str = "cpu"
    #: The trained weights' licence (keys spdx, name, url, notice), written into exported models;
    #: None: the dataset's own terms (``hmer_train.licences``).
    license: dict | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    # stroke_width/symbol_px None: the renders' (resolved by image_configs); 0: off
    preprocess: PreprocessConfig = field(default_factory=lambda: PreprocessConfig(stroke_width=None, symbol_px=None))
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeOptions = field(default_factory=lambda: DecodeOptions(beam=10, grammar=True, rescore=True))

    def to_dict(self) -> dict:
        """Plain data (lists, no tuples) for YAML, JSON and checkpoints; ``from_dict`` inverts it."""
        d = _plain(dataclasses.asdict(self))
        d["render"] = self.render.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> Config:
        """A config from plain data; ConfigError (naming ``source`` and the dotted key) for an
        unknown key or a bad value. Sections or keys left out take their defaults."""
        return _build(cls, d, "", source)

    def updated(self, changes: dict, source: str = "command line") -> Config:
        """A copy with ``changes`` (dotted keys, or nested mappings) merged in, as a YAML file's
        keys are: a partial section keeps its other keys; a new architecture ``type`` drops the
        old type's options."""
        merged = self.to_dict()
        for dotted, value in changes.items():
            nested: dict = {}
            cur = nested
            parts = dotted.split(".")
            for part in parts[:-1]:
                cur = cur.setdefault(part, {})
            cur[parts[-1]] = value
            merged = _merge(merged, nested, "", source)
        return Config.from_dict(merged, source)


# Each section's class by dotted key; every other key is a plain value.
SECTIONS: dict[str, type] = {"model": ModelConfig, "render": RenderConfig, "preprocess": PreprocessConfig,
                             "train": TrainConfig, "train.augment": AugmentConfig, "decode": DecodeOptions}
ARCHITECTURE_KEYS = ("model.encoder", "model.decoder")
LICENSE_KEYS = {"spdx", "name", "url", "notice"}


def _build(cls: type, d: Any, where: str, source: str):
    if not isinstance(d, dict):
        raise ConfigError(source, f"config key '{where}' must be a mapping" if where else "config must be a mapping")
    names = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in d.items():
        dotted = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(source, f"unknown config key '{dotted}'")
        if dotted in SECTIONS:
            value = _build(SECTIONS[dotted], value, dotted, source)
        elif dotted in ARCHITECTURE_KEYS:
            if not isinstance(value, dict):
                raise ConfigError(source, f"config key '{dotted}' must be a mapping")
            value = copy.deepcopy(value)
        elif dotted == "license" and value is not None:
            unknown = set(value) - LICENSE_KEYS if isinstance(value, dict) else None
            if unknown is None or unknown:
                keys = ", ".join(sorted(LICENSE_KEYS))
                raise ConfigError(source, f"config key 'license' must be a mapping of {keys}")
            value = dict(value)
        elif isinstance(value, list):
            value = tuple(value)
        values[key] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(source, f"{where or 'config'}: {e}") from e


def _merge(base: dict, update: dict, where: str, source: str) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        key = f"{where}.{k}" if where else k
        if key in ARCHITECTURE_KEYS and isinstance(v, dict) and isinstance(base.get(k), dict):
            same_type = "type" not in v or v["type"] == base[k].get("type")
            out[k] = {**base[k], **v} if same_type else dict(v)
        elif key == "train.augment" and v is None:
            out[k] = {}  # null: no augmentation (AugmentConfig's own defaults are all off)
        elif isinstance(base.get(k), dict):
            if not isinstance(v, dict):
                raise ConfigError(source, f"config key '{key}' must be a mapping")
            out[k] = _merge(base[k], v, key, source)
        else:
            out[k] = v
    return out


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def image_configs(cfg: Config) -> tuple[RenderConfig, PreprocessConfig]:
    """A run's training render and preprocessing settings. Preprocessing's ``stroke_width`` and
    ``symbol_px`` unset (None) are the renders'."""
    render, pre = cfg.render, cfg.preprocess
    pre = replace(pre, stroke_width=render.line_width if pre.stroke_width is None else pre.stroke_width,
                  symbol_px=render.symbol_px if pre.symbol_px is None else pre.symbol_px)
    return render, pre


def rescorable(cfg: Config) -> bool:
    """Whether a run's model can rescore right to left: a transformer decoder trained both ways."""
    return cfg.train.bidirectional and cfg.model.decoder.get("type", "comer") == "comer"


def reading(cfg: Config) -> Reading:
    """How a run's model reads at inference (what its export writes into model.json), decided by
    the runtime's :meth:`Reading.from_training` from the run's settings."""
    if not cfg.decode.input_scale > 0:
        raise ConfigError("decode.input_scale", f"must be positive, not {cfg.decode.input_scale}")
    return Reading.from_training(*image_configs(cfg), cfg.decode, rescorable(cfg))


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """The defaults updated by the YAML file (if any), then by ``overrides`` (dotted keys allowed)."""
    cfg = Config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(str(p), "config file not found")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(str(p), f"invalid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(str(p), "config must be a mapping")
        cfg = cfg.updated(data, str(p))
    # an override of None is a command-line flag not given
    return cfg.updated({k: v for k, v in (overrides or {}).items() if v is not None})
