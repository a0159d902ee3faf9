"""``Reading``: how a trained model reads its inputs, decided once from how it was trained.

An export writes these settings into model.json (``render``, ``preprocess``, ``decode``), and
evaluating a checkpoint in PyTorch reads with the same ones, so a checkpoint and its export see an
input alike. The training side supplies only facts about the run (its renders, its decode
section, whether its decoder can rescore right to left); the decisions are made here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.inputs.preprocess import PreprocessConfig
from hmer_runtime.inputs.render import RenderConfig

#: The pen every runtime draws ink with: exactly specified, so the browser reproduces it to the
#: pixel (``hmer_runtime.inputs.render``); models read as well with it as with PIL's.
READING_PEN = "capsule"


@dataclass(frozen=True)
class Reading:
    """The render, preprocessing and decode settings a model reads with."""

    render: RenderConfig
    preprocess: PreprocessConfig
    decode: DecodeOptions

    @classmethod
    def from_training(cls, render: RenderConfig, preprocess: PreprocessConfig, decode: DecodeOptions,
                      rescorable: bool) -> Reading:
        """From a run's training renders and preprocessing (strokes and symbol size resolved) and
        its decode section. Symbols and strokes are read ``decode.input_scale`` times the training
        size (chosen on validation data with ``hmer-eval --input-scale``) and drawn with
        :data:`READING_PEN`. Right-to-left rescoring stays on only where ``rescorable`` (a
        transformer decoder trained in both reading directions)."""
        k = float(decode.input_scale)
        if k <= 0:
            raise ValueError(f"decode.input_scale must be positive, not {k}")
        render = replace(render, symbol_px=round(float(render.symbol_px) * k, 3),
                         line_width=round(float(render.line_width) * k, 3), pen=READING_PEN)
        preprocess = replace(preprocess, symbol_px=round(float(preprocess.symbol_px) * k, 3),
                             stroke_width=round(float(preprocess.stroke_width) * k, 3))
        return cls(render, preprocess, replace(decode, rescore=decode.rescore and rescorable))
