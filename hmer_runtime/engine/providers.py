"""ONNX Runtime execution providers: which to try, with which options, and which one really runs.

All provider options live here. ``auto`` tries TensorRT, then CUDA, then CPU, among the providers
this onnxruntime build offers; after an InferenceSession is created, ``get_providers()`` tells which one was
actually taken (onnxruntime-gpu on a machine without a usable GPU can fall back to CPU silently).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from hmer_runtime.errors import ModelError

ORT_NAMES = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
SHORT_NAMES = {v: k for k, v in ORT_NAMES.items()}
AUTO_ORDER = ("tensorrt", "cuda", "cpu")


def default_cache_dir() -> Path:
    """Where TensorRT engines and timing caches go: $HMER_CACHE/tensorrt or ~/.cache/hmer/tensorrt."""
    return Path(os.environ.get("HMER_CACHE", Path.home() / ".cache" / "hmer")) / "tensorrt"


@dataclass
class ProviderConfig:
    """``provider``: auto, cpu, cuda or tensorrt. ``threads``: CPU intra-op threads (0 = ORT default).
    ``trt_fp16``: let TensorRT build fp16 engines. ``trt_profiles``: per graph file stem, the
    (min, opt, max) shape strings of the TensorRT optimization profile (see model.json)."""

    provider: str = "auto"
    threads: int = 0
    device_id: int = 0
    trt_fp16: bool = False
    cache_dir: Path | None = None
    trt_profiles: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def candidates(self) -> list[str]:
        """Short names to try, in order, among those this onnxruntime build has."""
        available = set(ort.get_available_providers())
        if self.provider == "auto":
            return [p for p in AUTO_ORDER if ORT_NAMES[p] in available]
        if self.provider not in ORT_NAMES:
            raise ValueError(f"unknown provider {self.provider!r} (choose from auto, {', '.join(ORT_NAMES)})")
        if ORT_NAMES[self.provider] not in available:
            have = ", ".join(SHORT_NAMES.get(p, p) for p in ort.get_available_providers())
            raise ModelError(self.provider, f"provider not available in this onnxruntime build (has: {have}); "
                                            "install onnxruntime-gpu for cuda/tensorrt")
        return [self.provider] + (["cpu"] if self.provider != "cpu" else [])

    def options(self, name: str, graph: str) -> dict:
        """Provider options for ``name`` when loading the graph whose file stem is ``graph``."""
        if name == "cuda":
            return {"device_id": self.device_id}
        if name == "tensorrt":
            cache = Path(self.cache_dir or default_cache_dir())
            cache.mkdir(parents=True, exist_ok=True)
            opts = {"device_id": self.device_id, "trt_fp16_enable": self.trt_fp16,
                    "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                    "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}
            if graph in self.trt_profiles:
                lo, opt, hi = self.trt_profiles[graph]
                opts |= {"trt_profile_min_shapes": lo, "trt_profile_opt_shapes": opt, "trt_profile_max_shapes": hi}
            return opts
        return {}


def create_session(path: str | Path, config: ProviderConfig) -> tuple[ort.InferenceSession, str]:
    """An InferenceSession on the first provider of ``config`` that loads; returns it and the
    short name of the provider that really runs it."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(str(path), "graph file not found")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if config.threads:
        so.intra_op_num_threads = config.threads
        so.inter_op_num_threads = 1
    names = config.candidates()
    providers = [(ORT_NAMES[n], config.options(n, path.name.split(".")[0])) for n in names]
    try:
        session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for broken graphs
        raise ModelError(str(path), f"cannot load ONNX graph ({type(e).__name__}: {str(e).splitlines()[0][:160]})") \
            from e
    used = SHORT_NAMES.get(session.get_providers()[0], session.get_providers()[0])
    if config.provider not in ("auto", used):
        raise ModelError(str(path), f"requested provider {config.provider} did not load (onnxruntime fell back to "
                                    f"{used}); check the CUDA/TensorRT installation")
    return session, used
