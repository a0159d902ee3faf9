"""Reading checkpoints written by CoMER's own code (PyTorch Lightning) as hmer checkpoints.

A CoMER checkpoint holds ``state_dict`` (keys under ``comer_model.``) and ``hyper_parameters``;
its vocabulary is a separate ``dictionary.txt`` (ids 0 ``<pad>``, 1 ``<sos>``, 2 ``<eos>``, then one
symbol per line). :func:`convert` maps it onto the ``comer-exact`` architecture
(:mod:`hmer_train.models.comer_exact`) with hmer's vocabulary layout, which has ``<unk>`` at id 3:
CoMER's symbol ids move up by one, and the new ``<unk>`` row gets a logit bias of -1e4, so it
never wins and every probability over CoMER's own symbols is unchanged.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch

from hmer_runtime.errors import ModelError
from hmer_runtime.text.vocab import Vocab

PREFIX = "comer_model."
UNK_LOGIT = -1e4  # exp(-1e4) is 0 in fp32 and fp16 alike, and -1e4 is representable in both

# CoMER's module path -> comer_exact's (first match wins; groups carry indices over).
_RENAMES = [
    (r"encoder\.model\.(conv1|norm1|post_norm)\.", r"encoder.\1."),
    (r"encoder\.model\.(dense\d\.\d+|trans\d)\.", r"encoder.\1."),
    (r"encoder\.feature_proj\.", "decoder.feature_proj."),
    (r"encoder\.norm\.", "decoder.feature_norm."),
    (r"decoder\.word_embed\.0\.", "decoder.embed."),
    (r"decoder\.word_embed\.1\.", "decoder.embed_norm."),
    (r"decoder\.norm\.", "decoder.input_norm."),
    (r"decoder\.model\.layers\.(\d+)\.self_attn\.in_proj_", r"decoder.layers.\1.self_in."),
    (r"decoder\.model\.layers\.(\d+)\.self_attn\.out_proj\.", r"decoder.layers.\1.self_out."),
    (r"decoder\.model\.layers\.(\d+)\.multihead_attn\.in_proj_", r"decoder.layers.\1.cross_in."),
    (r"decoder\.model\.layers\.(\d+)\.multihead_attn\.out_proj\.", r"decoder.layers.\1.cross_out."),
    (r"decoder\.model\.layers\.(\d+)\.(linear1|linear2|norm1|norm2|norm3)\.", r"decoder.layers.\1.\2."),
    (r"decoder\.model\.arm\.(conv|proj)\.", r"decoder.arm.\1."),
    (r"decoder\.model\.arm\.post_norm\.bn\.", "decoder.arm.norm."),
    (r"decoder\.proj\.", "decoder.classifier."),
]
_SKIP = {"decoder.pos_enc.pe"}  # a fixed sinusoid table, recomputed


def is_comer_checkpoint(obj: object) -> bool:
    """Whether a loaded checkpoint is CoMER's Lightning format."""
    return isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and \
        any(str(k).startswith(PREFIX) for k in obj["state_dict"])


def read_dictionary(path: str | Path) -> list[str]:
    """CoMER's ``dictionary.txt``: one symbol per line, in id order after pad, sos, eos."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(str(path), "vocabulary file not found (CoMER's dictionary.txt)")
    symbols = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not symbols or len(set(symbols)) != len(symbols):
        raise ModelError(str(path), "expected one distinct symbol per line")
    return symbols


def architecture(hp: dict) -> dict:
    """hmer's ``model`` config for CoMER's hyper-parameters."""
    if not (hp.get("cross_coverage", True) and hp.get("self_coverage", True)):
        raise ModelError("hyper_parameters", "only CoMER with both cross and self coverage is supported")
    return {"encoder": {"type": "comer", "growth": int(hp["growth_rate"]), "depth": int(hp["num_layers"])},
            "decoder": {"type": "comer-exact", "d_model": int(hp["d_model"]), "heads": int(hp["nhead"]),
                        "layers": int(hp["num_decoder_layers"]), "ffn": int(hp["dim_feedforward"]),
                        "dropout": float(hp["dropout"]), "dc": int(hp["dc"])}}


def _rename(key: str) -> str | None:
    for pattern, repl in _RENAMES:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key, count=1)
    return None


def convert(path: str | Path, dictionary: str | Path) -> dict:
    """An hmer checkpoint dict (model, config, vocab, ...) from CoMER's checkpoint file ``path`` and
    its ``dictionary``. ModelError naming the first key that does not fit."""
    path = Path(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated file, pickle refused by weights_only, ...
        raise ModelError(str(path), f"not a readable checkpoint ({type(e).__name__}: {str(e)[:120]})") from e
    return convert_loaded(raw, dictionary, path)


def convert_loaded(raw: dict, dictionary: str | Path, path: str | Path) -> dict:
    """:func:`convert` for a checkpoint already loaded (``path`` names it in errors)."""
    from hmer_train.config import Config
    from hmer_train.models.base import HMERModel

    if not is_comer_checkpoint(raw):
        raise ModelError(str(path), f"not a CoMER checkpoint (no state_dict keys under '{PREFIX}')")
    hp = raw.get("hyper_parameters") or {}
    try:
        arch = architecture(hp)
    except KeyError as e:
        raise ModelError(str(path), f"hyper_parameters lack {e}") from e
    symbols = read_dictionary(dictionary)
    vocab = Vocab(symbols)
    if len(vocab.tokens) != len(symbols) + 4:
        raise ModelError(str(dictionary), "it names a special token (<pad>, <sos>, <eos> or <unk>) as a symbol")
    model = HMERModel(arch, len(vocab))
    target = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in raw["state_dict"].items():
        if not key.startswith(PREFIX):
            continue
        key = key[len(PREFIX):]
        if key in _SKIP:
            continue
        name = _rename(key)
        if name is None or name not in target:
            raise ModelError(str(path), f"unexpected weight '{PREFIX}{key}' (not CoMER's architecture?)")
        if name in ("decoder.embed.weight", "decoder.classifier.weight", "decoder.classifier.bias"):
            value = _insert_unk(value, name.endswith("bias"))
        if name == "decoder.feature_proj.weight" and value.dim() == 4:  # a 1x1 conv is a linear map
            value = value.flatten(1)
        if value.shape != target[name].shape:
            raise ModelError(str(path), f"weight '{PREFIX}{key}' has shape {tuple(value.shape)}, expected "
                                        f"{tuple(target[name].shape)} (hyper_parameters or --vocab do not fit)")
        mapped[name] = value
    missing = [k for k in target if k not in mapped]
    if missing:
        raise ModelError(str(path), f"no weight for '{missing[0]}' ({len(missing)} missing)")
    # CoMER reads greyscale with ink 1.0 on 0.0 at the size it was given: no rescaling by symbol
    # size or stroke width; its decoding: beam 10, alpha 1.0, rescoring in both directions.
    config = Config().updated({
        "model": dataclasses.asdict(model.arch), "preprocess": {"stroke_width": 0, "symbol_px": 0, "as_given": True},
        "decode": {"beam": int(hp.get("beam_size", 10)), "max_len": int(hp.get("max_len", 200)),
                   "length_penalty": float(hp.get("alpha", 1.0)), "rescore": True, "grammar": False,
                   "search": "comer"}}, str(path)).to_dict()
    return {"format": "hmer-checkpoint-1", "model": mapped, "config": config, "vocab": vocab.tokens, "step": int(
        raw.get("global_step", 0)), "epoch": int(raw.get("epoch", 0)), "metrics": {},
        "source": {"kind": "comer-lightning", "path": str(path), "dictionary": str(dictionary)}}


def _insert_unk(value: torch.Tensor, bias: bool) -> torch.Tensor:
    """CoMER rows (pad, sos, eos, symbols...) -> hmer rows (pad, sos, eos, unk, symbols...)."""
    unk = torch.full_like(value[:1], UNK_LOGIT) if bias else torch.zeros_like(value[:1])
    return torch.cat([value[:3], unk, value[3:]])
