"""Precision conversion of ONNX models: FP16 (onnxconverter-common) and INT8 Q/DQ (ONNX Runtime)."""
