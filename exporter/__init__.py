"""PyTorch zoo model -> checked, simplified ONNX model that carries its preprocessing and provenance."""
from .api import ExportResult, export_model
from .parity import ParityReport, check_parity

__all__ = ["ExportResult", "ParityReport", "check_parity", "export_model"]
