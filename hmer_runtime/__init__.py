"""hmer_runtime: the torch-free part of hmer (ink, rendering, LaTeX tokens, preprocessing, metrics, ONNX runtime)."""

__version__ = "0.1.0"
