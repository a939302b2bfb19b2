"""Runners share one interface (after Polygraphy): context-managed, named inputs and outputs, timed."""
from .base import BaseRunner, TensorMeta
from .onnxruntime import OnnxRuntimeRunner

__all__ = ["BaseRunner", "OnnxRuntimeRunner", "TensorMeta"]
