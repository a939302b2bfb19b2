"""Moved to deploy.onnx_info (it reads ONNX models, not TensorRT); this old path stays for existing imports."""
from ..onnx_info import OnnxInfo, OnnxPrecision, inspect_onnx  # noqa: F401
