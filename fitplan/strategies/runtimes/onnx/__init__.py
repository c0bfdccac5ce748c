"""ONNX Runtime through optimum's exporter."""
