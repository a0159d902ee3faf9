"""``export_checkpoint``: a training checkpoint -> a checked model directory the runtime loads.

The checkpoint is loaded once; how the model reads (render, preprocessing, decode) is the
runtime's decision (``hmer_runtime.engine.reading``) from the run's settings, and the options of
one export travel whole in :class:`ExportOptions`. The directory is built under a temporary
name beside OUT_DIR and renamed into place at the end, so a failed export never leaves a
half-written model where a runtime would pick it up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from hmer_runtime import __version__
from hmer_runtime.engine.model_spec import LICENSE_FILE, MODEL_FORMAT, ModelSpec, dump_spec
from hmer_runtime.engine.onnx_model import OnnxModel
from hmer_runtime.engine.providers import ProviderConfig
from hmer_runtime.engine.reading import Reading
from hmer_runtime.errors import ModelError
from hmer_runtime.text.grammar import grammar_tables
from hmer_train.checkpoint import holds_average, load_model
from hmer_train.config import reading
from hmer_train.licences import license_file_text, weights_license

from .check import check_fp32, compare, scribble_images
from .graphs import (
    DEFAULT_OPSET,
    PARALLEL_DECODERS,
    attach_metadata,
    export_graphs,
    export_scorer_graph,
    tensorrt_profiles,
)
from .shared_weights import share_weights
from .variants import convert_fp16, quantize_int8


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ExportOptions:
    """How to export a checkpoint. ``check_data``: a labelled source (InkML folder or archive,
    image folder) whose first ``check_limit`` expressions join the synthetic check images, so
    reduced-precision variants report their ExpRate change on it. ``input_scale``, ``beam`` and
    ``scales`` replace the checkpoint's ``decode.input_scale``, ``decode.beam`` (the width
    runtimes decode with by default) and ``decode.scales`` (the sizes they read each input at),
    ``side_beam`` its ``decode.side_beam`` (the width at the sizes other than the model's own).
    ``vocab``: the vocabulary file of a CoMER checkpoint (``hmer_train.comer_import``)."""

    opset: int = DEFAULT_OPSET
    fp16: bool = False
    int8: bool = False
    check: bool = True
    check_data: str | Path | None = None
    check_limit: int = 64
    force: bool = False
    input_scale: float | None = None
    vocab: str | Path | None = None
    beam: int | None = None
    scales: tuple[float, ...] | None = None
    side_beam: int | None = None


def describe(model, vocab, ckpt: dict, ckpt_path: Path, read: Reading, layout: dict, opset: int) -> dict:
    """The model description stored as model.json and in the graphs' metadata."""
    cfg = ckpt["config"]
    return {
        "format": MODEL_FORMAT,
        "hmer_version": __version__,
        "architecture": dataclasses.asdict(model.arch),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab": vocab.tokens,
        "special_ids": {"pad": vocab.pad_id, "sos": vocab.sos_id, "eos": vocab.eos_id, "unk": vocab.unk_id},
        "preprocess": read.preprocess.to_dict(),
        "render": read.render.to_dict(),
        "decode": read.decode.to_model_json(),
        "grammar": grammar_tables(),
        **layout,
        "metrics": ckpt.get("metrics", {}),
        "license": weights_license(cfg),
        "checkpoint": {"file": ckpt_path.name, "sha256": file_sha256(ckpt_path), "step": ckpt.get("step"),
                       "epoch": ckpt.get("epoch"),
                       "weights": "moving average" if holds_average(ckpt) else "trained",
                       **({"averaged_from": ckpt["averaged_from"]} if "averaged_from" in ckpt else {})},
        "opset": opset,
        "exporter": f"torch {torch.__version__} (TorchScript-based torch.onnx.export)",
    }


#: The graphs of a variant, by role; a variant's ``weights`` is the file its decoder and scorer share.
GRAPH_ROLES = ("encoder", "decoder", "scorer")
WEIGHTS_FILE = "decoder.weights"


def _share_decoder_weights(folder: Path, files: dict, weights: str) -> None:
    """Store the decoder's tensors once for its step and scorer graphs (``export.shared_weights``),
    and name the file in the variant's ``files`` as ``weights``."""
    if "scorer" in files and share_weights([folder / files["decoder"], folder / files["scorer"]], folder / weights):
        files["weights"] = weights


def _exprate(ids: list[list[int]], truth: list[list[int]]) -> float:
    return 100.0 * sum(a == b for a, b in zip(ids, truth)) / max(1, len(truth))


def _variant_report(model, onnx_model: OnnxModel, images: list[np.ndarray], truth: list[list[int]] | None,
                    batch_size: int = 8) -> dict:
    """How far a reduced-precision variant is from PyTorch: logits, agreement, ExpRate change."""
    logits, agree, torch_ids, ids = 0.0, 0, [], []
    for i in range(0, len(images), batch_size):
        r, t_ids, o_ids = compare(model, onnx_model, images[i:i + batch_size], beam=1)
        logits = max(logits, r.logits_max_abs)
        agree += r.greedy_equal
        torch_ids += t_ids
        ids += o_ids
    out = {"images": len(images), "greedy_agreement": agree / max(1, len(images)), "logits_max_abs": logits}
    if truth:
        out["exprate_fp32_torch"] = _exprate(torch_ids, truth)
        out["exprate"] = _exprate(ids, truth)
        out["exprate_change"] = out["exprate"] - out["exprate_fp32_torch"]
    return out


def _labelled_inputs(source: str | Path, limit: int, read: Reading, vocab, cache: str) -> tuple[list, list]:
    """Model inputs (as the exported model reads them) and token ids of up to ``limit`` labelled
    expressions of ``source``."""
    from hmer_train.prepared import prepare

    data = prepare(source, read.render, read.preprocess, cache, limit=limit)
    return [data.image(i) for i in range(len(data))], [vocab.encode(toks) for toks in data.tokens]


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, options: ExportOptions = ExportOptions(),
                      log: Callable[[str], None] = print) -> dict:
    """Export, check and (optionally) quantize as ``options`` say; returns the written model.json
    as a dict."""
    from hmer_train.prepared import DEFAULT_CACHE

    o = options
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    model, vocab, ckpt = load_model(checkpoint, input_scale=o.input_scale, vocab=o.vocab)
    cfg = ckpt["config"]
    read = reading(cfg)
    read = replace(read, decode=read.decode.with_overrides(beam=o.beam, scales=o.scales, side_beam=o.side_beam))
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())) and not o.force:
        raise ModelError(str(out_dir), "already exists; use --force to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out_dir.parent, os.W_OK):
        raise ModelError(str(out_dir), f"cannot write into {out_dir.parent} (permission denied)")
    check_images, check_truth = _labelled_inputs(o.check_data, o.check_limit, read, vocab,
                                                 cfg.cache_dir or DEFAULT_CACHE) if o.check_data else ([], [])
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        layout = export_graphs(model, tmp, o.opset)
        meta = describe(model, vocab, ckpt, checkpoint, read, layout, o.opset)
        graphs = {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}
        if model.kind in PARALLEL_DECODERS:  # whole sequences scored in one call (rescoring)
            export_scorer_graph(model, tmp / "scorer.onnx", o.opset)
            graphs["scorer"] = "scorer.onnx"
        for name in graphs.values():
            attach_metadata(tmp / name, meta)
        _share_decoder_weights(tmp, graphs, WEIGHTS_FILE)
        raw = {**meta, "tensorrt_profiles": tensorrt_profiles(meta), "variants": {"fp32": dict(graphs)}}
        dump_spec(raw, tmp)
        (tmp / LICENSE_FILE).write_text(license_file_text(meta["license"]), encoding="utf-8")
        cpu = ProviderConfig("cpu")
        images = scribble_images(read.render, read.preprocess) + check_images
        if o.check:
            report = check_fp32(model, OnnxModel(ModelSpec.load(tmp), "fp32", cpu), images)
            raw["variants"]["fp32"]["check"] = report.to_dict()
            log(f"fp32 check passed: {report.summary()}")
        truth = ([None] * (len(images) - len(check_truth)) + list(check_truth)) if check_truth else None
        labelled = [(im, t) for im, t in zip(images, truth)] if truth else []
        labelled = [(im, t) for im, t in labelled if t is not None]
        for name, make, wanted in (("int8", quantize_int8, o.int8), ("fp16", convert_fp16, o.fp16)):
            if not wanted:
                continue
            # int8 quantizes the step decoder only: its encoder is encoder.onnx (variants.quantize_int8),
            # and it rescores with scorer.onnx (one call per image), not worth a second copy of the weights.
            parts = [p for p in GRAPH_ROLES if p in graphs and (name != "int8" or p == "decoder")]
            files = dict(graphs)
            for part in parts:
                files[part] = f"{part}.{name}.onnx"
                make(tmp / f"{part}.onnx", tmp / files[part])
                attach_metadata(tmp / files[part], meta)
            if "scorer" in parts:
                files.pop("weights", None)
                _share_decoder_weights(tmp, files, f"decoder.{name}.weights")
            raw["variants"][name] = dict(files)
            dump_spec(raw, tmp)
            try:
                variant = OnnxModel(ModelSpec.load(tmp), name, cpu)
            except ModelError as e:  # e.g. fp16 kernels missing on the CPU provider
                raw["variants"][name]["check"] = {"skipped": f"does not run on the CPU provider: {e.message}"}
                log(f"{name}: written, not checked ({e.message})")
                continue
            if labelled:
                rep = _variant_report(model, variant, [im for im, _ in labelled], [t for _, t in labelled])
                rep["synthetic"] = _variant_report(model, variant, images[:len(images) - len(labelled)], None)
            else:
                rep = _variant_report(model, variant, images, None)
            raw["variants"][name]["check"] = rep
            change = f", ExpRate change {rep['exprate_change']:+.1f} points" if "exprate_change" in rep else ""
            log(f"{name}: greedy agreement with PyTorch {rep['greedy_agreement']:.1%} on {rep['images']} images"
                f"{change}")
        dump_spec(raw, tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
        os.replace(tmp, out_dir)
        os.chmod(out_dir, 0o755)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return raw
