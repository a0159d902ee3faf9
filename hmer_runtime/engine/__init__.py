"""An exported model on ONNX Runtime: model.json, execution providers, batch encoding, the step loop."""
