"""Training configuration: defaults, YAML loading, CLI overrides, and refusal of unknown keys.

``config.yaml`` in the repository root documents every key; a test keeps it in step with
:data:`DEFAULTS`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from hmer_runtime.errors import HmerError
from hmer_runtime.inputs.preprocess import PreprocessConfig
from hmer_runtime.inputs.render import RenderConfig

DEFAULTS: dict = {
    "dataset": "CROHME",
    "data_roots": ["datasets", "../shared/data"],
    "train_split": "train",
    "val_split": "2013",
    "test_splits": ["2014"],
    "cache_dir": None,
    "out": "checkpoints",
    "checkpoint": None,
    "device": "cpu",
    "model": {
        "encoder": {"growth": 24, "depth": 16, "dropout": 0.0},
        "decoder": {"type": "comer", "d_model": 256, "heads": 8, "layers": 3, "ffn": 1024, "dropout": 0.3,
                    "embed_norm": True},
    },
    "render": {"symbol_px": 32.0, "line_width": 3.0, "pad": 8, "max_height": 256, "max_width": 1024,
               "supersample": 4},
    "preprocess": {"pad": 8, "max_height": 256, "max_width": 1024, "ink_threshold": 0.2, "stroke_width": None,
                   "symbol_px": None, "as_given": False},
    "train": {
        "batch_size": 16,
        "max_pixels": 800000,
        "accumulate": 1,
        "lr": 0.0005,
        "weight_decay": 0.0001,
        "warmup_steps": 500,
        "epochs": 100,
        "max_steps": None,
        "grad_clip": 1.0,
        "label_smoothing": 0.0,
        "ema": 0.999,
        "amp": "bf16",
        "seed": 0,
        "bidirectional": True,
        "max_tokens": 200,
        "threads": None,
        "log_every": 20,
        "workers": 1,
        "pad_to": 16,
        "val_every": 1,
        "val_max": None,
        # hmer_train/augment.py: AugmentConfig says what each key does
        "augment": {"scale": [0.7, 1.4], "rotate_deg": 3.0, "shear": 0.1, "stroke_jitter": 0.3, "ink": True,
                    "aspect": 0.15, "stroke_shift": 0.04, "stroke_scale": 0.08, "elastic": 0.1,
                    "pen_width": [0.85, 1.2], "blur": 0.2},
    },
    "decode": {"beam": 10, "max_len": 200, "length_penalty": 1.0, "rescore": True, "input_scale": 1.0,
               "grammar": True, "search": "hmer"},
}

# Keys whose value is a free-form mapping (architecture options differ between decoders).
OPEN_KEYS = {"model.encoder", "model.decoder", "train.augment"}


class ConfigError(HmerError):
    pass


def _merge(base: dict, update: dict, where: str, source: str) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        key = f"{where}.{k}" if where else k
        if k not in base and where not in OPEN_KEYS:
            raise ConfigError(source, f"unknown config key '{key}'")
        if isinstance(base.get(k), dict) and key not in OPEN_KEYS:
            if not isinstance(v, dict):
                raise ConfigError(source, f"config key '{key}' must be a mapping")
            out[k] = _merge(base[k], v, key, source)
        elif isinstance(base.get(k), dict) and isinstance(v, dict):
            out[k] = {**base[k], **v} if key != "model.decoder" or v.get("type", base[k]["type"]) == \
                base[k]["type"] else dict(v)
        else:
            out[k] = v
    return out


def image_configs(cfg: dict, inference: bool = False) -> tuple[RenderConfig, PreprocessConfig]:
    """A run's render and preprocessing settings. Preprocessing's ``stroke_width`` and
    ``symbol_px`` unset (None, or absent from an older checkpoint's config) are the renders'.

    ``inference``: as the model reads, not as it trains: symbols and strokes ``decode.input_scale``
    times the training size (chosen on validation data with ``hmer-eval --input-scale``), drawn
    with the capsule pen, which every runtime (the browser's included) reproduces exactly
    (``hmer_runtime.inputs.render``; the bundled model reads as well with it as with PIL's, docs/MODEL.md)."""
    render = dict(cfg["render"])
    pre = dict(cfg["preprocess"])
    for key, value in (("stroke_width", render["line_width"]), ("symbol_px", render["symbol_px"])):
        if pre.get(key) is None:
            pre[key] = value
    k = float(cfg["decode"].get("input_scale", 1.0)) if inference else 1.0
    if k <= 0:
        raise ConfigError("decode.input_scale", f"must be positive, not {k}")
    for d, keys in ((render, ("symbol_px", "line_width")), (pre, ("symbol_px", "stroke_width"))):
        for key in keys:
            d[key] = round(float(d[key]) * k, 3)
    if inference:
        render["pen"] = "capsule"
    return RenderConfig.from_dict(render), PreprocessConfig.from_dict(pre)


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """DEFAULTS updated by the YAML file (if any), then by ``overrides`` (dotted keys allowed)."""
    cfg = copy.deepcopy(DEFAULTS)
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
        cfg = _merge(cfg, data, "", str(p))
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        nested: dict = {}
        cur = nested
        parts = dotted.split(".")
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        cur[parts[-1]] = value
        cfg = _merge(cfg, nested, "", "command line")
    return cfg
