"""PyTorch zoo model, program (.pt2, TorchScript) or foreign ONNX -> checked, simplified ONNX model that carries its
preprocessing and provenance.

The public names load lazily (PEP 562), so later stages can use the ONNX graph utilities in
``exporter.onnx_graph`` and ``exporter.attention_forms`` without importing torch.
"""
import importlib

_EXPORTS = {
    "ExportResult": "exporter.api",
    "export_model": "exporter.api",
    "export_onnx_file": "exporter.sources",
    "export_program": "exporter.sources",
    "ParityReport": "exporter.parity",
    "check_parity": "exporter.parity",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name))
