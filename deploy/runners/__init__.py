"""Runners share one interface (after Polygraphy): context-managed, named inputs and outputs, timed."""
from .base import BaseRunner, TensorMeta
from .execution import INPUT_NAME, OUTPUT_NAME, artifact_kind, infer_all, latency_record, pad_batch
from .onnxruntime import OnnxRuntimeRunner

__all__ = ["BaseRunner", "INPUT_NAME", "OUTPUT_NAME", "OnnxRuntimeRunner", "TensorMeta", "TensorRTRunner",
           "artifact_kind", "infer_all", "latency_record", "pad_batch"]


def __getattr__(name):
    # TensorRTRunner is exported lazily (PEP 562): its module is light, but keeping it out of this import keeps
    # `import deploy.runners` independent of everything TensorRT-related.
    if name == "TensorRTRunner":
        from .tensorrt import TensorRTRunner
        return TensorRTRunner
    raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name))
