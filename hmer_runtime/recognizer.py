"""``Recognizer``: images, image files, InkML files or pen strokes in; LaTeX out.

    from hmer_runtime import Recognizer
    rec = Recognizer()                     # the bundled default model, best provider available
    print(rec.recognize("photo.png").latex)

Inputs go through the preprocessing stored in the model (the same code training used); ink is
rendered with the model's own render settings, so a drawing pad gets training-like images.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from hmer_runtime.decoding.confidence import features
from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.decoding.pooling import pool, view_options
from hmer_runtime.engine.model_spec import ModelSpec
from hmer_runtime.engine.onnx_model import OnnxModel, Timings
from hmer_runtime.engine.providers import ProviderConfig
from hmer_runtime.errors import HmerError, ImageError, input_error
from hmer_runtime.inputs.inkml import Ink, read_inkml
from hmer_runtime.inputs.preprocess import load_image, pad_batch
from hmer_runtime.inputs.render import model_inputs
from hmer_runtime.inputs.strokes import read_strokes
from hmer_runtime.text.latex import compact, detokenize

#: Where the default model lives inside the installed package.
BUNDLED_MODEL = Path(__file__).parent / "models" / "default"



@dataclass
class Alternative:
    """Another reading the search found, ranked below the result."""

    latex: str
    tokens: list[str]
    score: float

    def to_dict(self) -> dict:
        return {"latex": self.latex, "tokens": self.tokens,
                "score": round(self.score, 4) if math.isfinite(self.score) else None}


@dataclass
class Result:
    """One recognised expression. ``score`` is the length-normalised log-probability;
    ``confidence`` the probability that the reading is exactly right (None when the model has no
    fitted confidence); ``token_confidence`` each token's probability as the search chose it;
    ``alternatives`` the search's next readings, best first (the first ``DecodeOptions.n_best`` - 1
    ranked exactly; a rescored beam ranks the rest by their left-to-right score);
    ``attention`` (per decoded token, an (h, w) map over the encoder grid) is filled when requested.
    ``error`` is set, and nothing else, for an input that could not be read or decoded (see
    :meth:`failed`)."""

    latex: str
    tokens: list[str]
    score: float
    ms: float = 0.0
    timings: dict = field(default_factory=dict)
    attention: list[np.ndarray] | None = None
    image: np.ndarray | None = None  # the model input, for attention overlays
    confidence: float | None = None
    token_confidence: list[float] = field(default_factory=list)
    alternatives: list[Alternative] = field(default_factory=list)
    error: Exception | None = None

    @classmethod
    def failed(cls, error: Exception) -> Result:
        """The result of an input that failed: no reading, and the error that says why."""
        return cls("", [], math.nan, error=error)

    @property
    def ok(self) -> bool:
        """Whether this input was read (``error`` is None)."""
        return self.error is None

    @property
    def latex_compact(self) -> str:
        """The LaTeX with no more spaces than it needs: ``x^{2}+2x+1``."""
        return compact(self.tokens)

    def to_dict(self, n_best: int = 1) -> dict:
        """Plain data for JSON; with ``n_best`` > 1, the first n_best - 1 alternatives too. A failed
        input gives only its error message."""
        if self.error is not None:
            return {"error": getattr(self.error, "message", None) or str(self.error)}
        score = round(self.score, 4) if math.isfinite(self.score) else None  # JSON has no NaN
        out = {"latex": self.latex, "latex_compact": self.latex_compact, "tokens": self.tokens, "score": score,
               "confidence": None if self.confidence is None else round(self.confidence, 4),
               "token_confidence": [round(p, 4) for p in self.token_confidence], "ms": round(self.ms, 2)}
        if n_best > 1:
            out["alternatives"] = [a.to_dict() for a in self.alternatives[:n_best - 1]]
        return out


class Recognizer:
    """Loads a model directory (default: the bundled model) on an ONNX Runtime provider."""

    def __init__(self, model_dir: str | Path | None = None, provider: str | ProviderConfig = "auto",
                 variant: str = "fp32", options: DecodeOptions | None = None, **overrides):
        """``provider``: a provider name, or a :class:`ProviderConfig` for threads and TensorRT
        settings. ``options``: how to decode (default: the model's ``decode`` section in its
        model.json, chosen when it was exported); ``overrides`` replace single settings of it,
        e.g. ``beam=1`` for greedy or ``grammar=False``."""
        self.spec = ModelSpec.load(model_dir or BUNDLED_MODEL)
        config = provider if isinstance(provider, ProviderConfig) else ProviderConfig(provider)
        self.model = OnnxModel(self.spec, variant, config)
        self.options = (options or self.spec.decode).with_overrides(**overrides)

    @property
    def provider(self) -> str:
        """The provider that really runs the graphs (cpu, cuda or tensorrt)."""
        return self.model.provider

    def load(self, item, name: str | None = None) -> np.ndarray:
        """Model input (H, W) float32 for one input of any supported kind, at the model's own size;
        any failure is an HmerError naming the input (its path for files; see ``errors.input_error``)."""
        return self.load_views(item, name, (1.0,))[0]

    def load_views(self, item, name: str | None = None, scales: tuple[float, ...] | None = None) -> list[np.ndarray]:
        """One model input per scale (default: this recognizer's ``options.scales``; see
        ``render.model_input``) for one input of any supported kind; failures as :meth:`load`."""
        if isinstance(item, Ink):
            name = name or item.id
        elif isinstance(item, list):
            name = name or "strokes"
        elif isinstance(item, (Image.Image, np.ndarray)):
            name = name or "<image>"
        else:
            name = name or str(item)
        try:
            return model_inputs(self._read(item, name), self.spec.render, self.spec.preprocess, name,
                                self.options.scales if scales is None else scales)
        except Exception as e:  # noqa: BLE001 - one input's failure, never the batch's
            raise input_error(name, e) from e

    @staticmethod
    def _read(item, name: str):
        """Ink or an image from any supported kind of input."""
        if isinstance(item, list):
            return Ink.from_strokes(item, id=name)
        if isinstance(item, (Ink, Image.Image, np.ndarray)):
            return item
        path = Path(item)
        readers = {".inkml": read_inkml, ".json": read_strokes}
        return readers.get(path.suffix.lower(), load_image)(path)

    def resolve(self, options: DecodeOptions | None = None, beam: int | None = None) -> DecodeOptions:
        """The options one call decodes with: ``options`` (default: this recognizer's), with
        ``beam`` replacing its beam when given. Each public call resolves them here, once."""
        return (options or self.options).with_overrides(beam=beam)

    def recognize(self, item, options: DecodeOptions | None = None, *, beam: int | None = None,
                  attention: bool = False) -> Result:
        """Recognise one image, path (image, InkML or stroke JSON), Ink or stroke list; raises its
        HmerError on bad input."""
        result = self.recognize_batch([item], options, beam=beam, attention=attention)[0]
        if result.error is not None:
            raise result.error
        return result

    def recognize_batch(self, items: list, options: DecodeOptions | None = None, *, beam: int | None = None,
                        attention: bool = False, batch_size: int | None = None) -> list[Result]:
        """Recognise several inputs, one result each in input order: in one padded batch, or by
        size in batches of ``batch_size`` (see :meth:`decode_images`). A bad input never raises:
        its result carries the HmerError naming it (``result.error``) and the others are read."""
        opts = self.resolve(options, beam)
        inputs: list[list[np.ndarray] | None] = []
        results: list[Result | None] = []
        pre_ms: list[float] = []  # each input's own reading and preprocessing time
        for item in items:
            t0 = time.perf_counter()
            try:
                inputs.append(self.load_views(item, scales=opts.scales))
                results.append(None)
            except HmerError as e:
                inputs.append(None)
                results.append(Result.failed(e))
            pre_ms.append((time.perf_counter() - t0) * 1000)
        ok = [i for i, r in enumerate(results) if r is None]
        if ok:
            for i, r in zip(ok, self._decode([inputs[i] for i in ok], opts, attention, batch_size)):
                r.timings["preprocess_ms"] = pre_ms[i]
                r.ms += pre_ms[i]
                results[i] = r
        return results  # type: ignore[return-value]  # every slot is filled above

    def decode_images(self, images: list[np.ndarray | list[np.ndarray]], options: DecodeOptions | None = None, *,
                      beam: int | None = None, attention: bool = False, batch_size: int | None = None) -> list[Result]:
        """Recognise preprocessed model inputs (H, W) float32, or each input's views (from
        :meth:`load_views`), batched with padding + mask; results in input order. With
        ``batch_size``, inputs are sorted by size and decoded that many at a time, so a batch pads
        little and its images end at about the same step."""
        inputs = [[im] if isinstance(im, np.ndarray) else list(im) for im in images]
        return self._decode(inputs, self.resolve(options, beam), attention, batch_size)

    def _decode(self, inputs: list[list[np.ndarray]], options: DecodeOptions, attention: bool,
                batch_size: int | None) -> list[Result]:
        for im in (im for views in inputs for im in views):
            if im.ndim != 2 or im.size == 0:
                raise ImageError("<input>", f"model input must be a non-empty 2-D array, got shape {im.shape}")
        if batch_size and len(inputs) > batch_size:
            order = sorted(range(len(inputs)), key=lambda i: (inputs[i][0].shape[1], inputs[i][0].shape[0]))
            out: list[Result | None] = [None] * len(inputs)
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                for i, r in zip(chunk, self._decode([inputs[i] for i in chunk], options, attention, None)):
                    out[i] = r
            return out  # type: ignore[return-value]
        # the views that decode alike (the model's own size, the side sizes) share a batch
        groups: dict[DecodeOptions, list[tuple[int, int]]] = {}
        for i, views in enumerate(inputs):
            for v, o in enumerate(view_options(options, len(views))):
                groups.setdefault(o, []).append((i, v))
        decoded: list[list] = [[None] * len(views) for views in inputs]
        timings = Timings()
        t0 = time.perf_counter()
        for o, where in groups.items():
            x, mask = pad_batch([inputs[i][v] for i, v in where], self.spec.stride)
            for (i, v), hyps in zip(where, self.model.decode(x, mask, o, attention, timings)):
                decoded[i][v] = hyps
        ms = (time.perf_counter() - t0) * 1000 / len(inputs)
        out = []
        vocab, calibration = self.spec.vocab, self.spec.confidence
        for views, per_view in zip(inputs, decoded):
            hs = pool(per_view)
            best = hs[0]
            keep = vocab.kept(best.ids)  # specials a model may emit mid-sequence go, with their maps
            tokens = vocab.decode(best.ids)
            maps = [best.attention[j] for j in keep] if attention and best.attention else None
            lps = [best.token_logprobs[j] for j in keep] if len(best.token_logprobs) == len(best.ids) else []
            others, seen = [], {tuple(tokens)}
            for h in hs[1:]:
                alt = vocab.decode(h.ids)
                if tuple(alt) not in seen:  # the same tokens by another path are not an alternative
                    seen.add(tuple(alt))
                    others.append(Alternative(detokenize(alt), alt, h.score))
            out.append(Result(detokenize(tokens), tokens, best.score, ms,
                              {"encoder_ms": timings.encoder_ms / len(inputs),
                               "decoder_ms": timings.decoder_ms / len(inputs), "steps": timings.steps},
                              maps, views[best.view] if attention else None,
                              calibration.probability(features(hs)) if calibration else None,
                              [math.exp(lp) for lp in lps], others))
        return out
