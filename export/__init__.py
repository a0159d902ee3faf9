"""hmer_export (the repository's ``export/`` folder): checkpoint -> encoder.onnx + one-step
decoder.onnx + model.json, checked against PyTorch. Imports torch; the runtime never imports this."""
