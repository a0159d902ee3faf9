"""``model.json``: everything a runtime needs to use an exported model, written by ``hmer-export``.

The same JSON (less the ``variants`` table, which is filled in after the graphs are checked) is
stored in both ONNX files' metadata under :data:`METADATA_KEY`, so a graph that strays from its
directory can still be identified and a mismatched pair is caught at load time.

Graph contract (names are fixed; shapes use the axis labels of :class:`TensorSpec`):

* encoder: ``images`` (batch, 1, H, W) float32, ink 1.0 on 0.0, H and W multiples of ``stride``;
  ``pixel_mask`` (batch, H, W) bool, True on real pixels -> ``memory.<name>`` for every memory
  tensor and ``init.<name>`` for every state tensor (the state before the first step).
* decoder: ``tokens`` (batch,) int64, ``beam_index`` (batch,) int64 (the ``state_in`` row each
  row continues), ``memory.<name>``, ``state_in.<name>`` -> ``logits`` (batch, vocab),
  ``attention`` (batch, height, width), ``state_out.<name>``.
* scorer (optional, decoders with parallel teacher forcing): ``tokens`` and ``targets`` (batch,
  steps) int64, targets -1 past each sequence's end, ``image_index`` (batch,) int64 and
  ``memory.<name>`` with one row per image -> ``logprob`` (batch,): log P(targets | image, tokens).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from hmer_runtime.decoding.confidence import Calibration
from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.errors import ModelError
from hmer_runtime.inputs.preprocess import PreprocessConfig
from hmer_runtime.inputs.render import RenderConfig
from hmer_runtime.text.vocab import Vocab

MODEL_FORMAT = "hmer-model-1"
METADATA_KEY = "hmer.model"
MODEL_FILE = "model.json"
LICENSE_FILE = "LICENSE"  # the weights' terms, beside the graphs


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor. ``shape`` entries are ints or axis labels: "batch" (hypotheses), "height"/
    "width" (encoder feature map), "length" (height x width), "steps" (tokens decoded so far)."""

    name: str
    shape: tuple
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        return cls(str(d["name"]), tuple(d["shape"]), str(d.get("dtype", "float32")))


@dataclass
class ModelSpec:
    """A parsed ``model.json``; ``directory`` is where the ONNX files are."""

    directory: Path
    vocab: Vocab
    preprocess: PreprocessConfig
    render: RenderConfig
    memory: list[TensorSpec]
    state: list[TensorSpec]
    stride: int = 16
    #: The step graph takes memory with one row per image (hypotheses image-major, the same number
    #: per image), not one per hypothesis; older exports: False.
    shared_memory: bool = False
    decode: DecodeOptions = DecodeOptions()  # how a runtime decodes unless told otherwise
    architecture: dict = field(default_factory=dict)
    parameters: int = 0
    checkpoint: dict = field(default_factory=dict)  # file, sha256, step, epoch and weights exported
    tensorrt_profiles: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # graph stem -> min/opt/max
    variants: dict = field(default_factory=dict)
    grammar: dict = field(default_factory=dict)  # grammar.grammar_tables(); empty for older exports
    #: The weights' licence (spdx, name, url, notice), from their training data; empty for older exports.
    license: dict = field(default_factory=dict)
    #: P(reading exactly right) from the search's features, fitted on validation data; None: not fitted.
    confidence: Calibration | None = None
    raw: dict = field(default_factory=dict)  # the whole file, for what a runtime does not read (evaluation)

    @property
    def checkpoint_sha256(self) -> str:
        return str(self.checkpoint.get("sha256", ""))

    def graph_paths(self, variant: str = "fp32") -> tuple[Path, Path]:
        """(encoder, decoder) ONNX paths of a variant (fp32, fp16, int8)."""
        if variant not in self.variants:
            have = ", ".join(sorted(self.variants)) or "none"
            raise ModelError(str(self.directory), f"no {variant} variant in {MODEL_FILE} (has: {have})")
        files = self.variants[variant]
        return self.directory / files["encoder"], self.directory / files["decoder"]

    def scorer_path(self, variant: str = "fp32") -> Path | None:
        """The variant's scorer graph (whole sequences by teacher forcing), if it was exported."""
        name = self.variants.get(variant, {}).get("scorer")
        return self.directory / name if name else None

    @classmethod
    def load(cls, directory: str | Path) -> ModelSpec:
        """Read and validate ``directory/model.json``; ModelError naming what is wrong."""
        directory = Path(directory)
        path = directory / MODEL_FILE
        if not directory.is_dir():
            raise ModelError(str(directory), "model directory not found")
        if not path.is_file():
            raise ModelError(str(directory), f"not an hmer model directory (no {MODEL_FILE})")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelError(str(path), f"not valid JSON ({e})") from e
        return cls.from_dict(raw, directory, str(path))

    @classmethod
    def from_dict(cls, raw: dict, directory: Path, where: str = MODEL_FILE) -> ModelSpec:
        if not isinstance(raw, dict) or raw.get("format") != MODEL_FORMAT:
            raise ModelError(where, f"unsupported model format {raw.get('format') if isinstance(raw, dict) else None!r}"
                                    f" (this hmer reads {MODEL_FORMAT})")
        try:
            vocab = Vocab.from_tokens(raw["vocab"])
            spec = cls(directory=directory, vocab=vocab,
                       preprocess=PreprocessConfig.from_dict(raw["preprocess"]),
                       render=RenderConfig.from_dict(raw["render"]),
                       memory=[TensorSpec.from_dict(d) for d in raw["memory"]],
                       state=[TensorSpec.from_dict(d) for d in raw["state"]],
                       stride=int(raw.get("stride", 16)),
                       shared_memory=bool(raw.get("shared_memory", False)),
                       decode=DecodeOptions.from_model_json(raw["decode"]),
                       architecture=dict(raw.get("architecture", {})), parameters=int(raw.get("parameters", 0)),
                       checkpoint=dict(raw.get("checkpoint", {})),
                       tensorrt_profiles={k: tuple(v) for k, v in raw.get("tensorrt_profiles", {}).items()},
                       variants=dict(raw.get("variants", {})),
                       grammar=dict(raw.get("grammar", {})),
                       license=dict(raw.get("license", {})),
                       confidence=Calibration.from_dict(raw["confidence"]) if raw.get("confidence") else None,
                       raw=raw)
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(where, f"malformed model description ({type(e).__name__}: {e})") from e
        check_ranges(spec, where)
        return spec


#: The values of model.json a runtime accepts, (low, high) inclusive: past them a model would
#: hang (max_len), divide by zero (stride, supersample) or give meaningless scores (NaN).
#: Those in :data:`OPTIONAL` may also be absent (None).
RANGES: dict[str, tuple[float, float]] = {
    "decode.beam": (1, 64), "decode.max_len": (1, 1000), "decode.length_penalty": (0.0, 10.0),
    "decode.input_scale": (0.1, 10.0), "decode.side_beam": (1, 64), "stride": (1, 64),
    "render.symbol_px": (1.0, 512.0), "render.line_width": (0.1, 64.0), "render.pad": (0, 512),
    "render.max_height": (16, 8192), "render.max_width": (16, 8192), "render.supersample": (1, 16),
    "preprocess.pad": (0, 512), "preprocess.max_height": (16, 8192), "preprocess.max_width": (16, 8192),
    "preprocess.ink_threshold": (0.01, 0.99), "preprocess.stroke_width": (0.0, 64.0),
    "preprocess.symbol_px": (0.0, 512.0),
}

#: Values a model.json may leave out (None: the runtime's default).
OPTIONAL = frozenset({"decode.side_beam"})


def check_ranges(spec: ModelSpec, where: str = MODEL_FILE) -> None:
    """ModelError naming the first value of ``spec`` outside :data:`RANGES` (NaN included)."""
    for key, (lo, hi) in RANGES.items():
        obj = spec
        for part in key.split("."):
            obj = getattr(obj, part)
        if obj is None and key in OPTIONAL:
            continue
        if not (isinstance(obj, (int, float)) and math.isfinite(obj) and lo <= obj <= hi):
            raise ModelError(where, f"{key} is {obj!r}, outside the range a model can have ({lo:g} to {hi:g})")


def dump_spec(raw: dict, directory: str | Path) -> Path:
    """Write ``raw`` as ``directory/model.json`` (pretty, UTF-8); returns the path."""
    path = Path(directory) / MODEL_FILE
    path.write_text(json.dumps(raw, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
