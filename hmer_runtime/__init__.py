"""hmer_runtime: the torch-free part of hmer (ink, rendering, LaTeX tokens, preprocessing, metrics, ONNX runtime).

    from hmer_runtime import Recognizer
    rec = Recognizer()                     # the bundled model
    result = rec.recognize("photo.png")
    print(result.latex, result.confidence)

The names below are imported when first used, so ``import hmer_runtime`` stays light (the
commands read only ``__version__`` from it).
"""

__version__ = "0.1.0"

__all__ = ["Alternative", "DecodeOptions", "HmerError", "ProviderConfig", "Recognizer", "Result", "__version__"]

_HOMES = {
    "Alternative": "hmer_runtime.recognizer", "Recognizer": "hmer_runtime.recognizer",
    "Result": "hmer_runtime.recognizer", "DecodeOptions": "hmer_runtime.decoding.decode_options",
    "ProviderConfig": "hmer_runtime.engine.providers", "HmerError": "hmer_runtime.errors",
}


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'hmer_runtime' has no attribute {name!r}")
