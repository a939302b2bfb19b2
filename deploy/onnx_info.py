"""An ONNX model's input shapes and precision (FP32, FP16, Q/DQ INT8), read without TensorRT.

The TensorRT build plan (deploy.trt.plan) and the bundle decide from it what an engine will be.

Readers, in order: the ``onnx`` package (exact), ONNX Runtime (input types and the metadata's "precision"), and
the JSON sidecar ``model.onnx.json`` that ``eca-deploy bundle`` writes, so a Jetson with neither still knows.
"""
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple

from .errors import UserError
from .metadata import load_onnx_proto, read_sidecar

_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class OnnxPrecision:
    fp16: bool = False
    qdq: bool = False
    source: str = "unknown"

    @property
    def label(self) -> str:
        return "int8" if self.qdq else ("fp16" if self.fp16 else "fp32")

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class OnnxInfo:
    inputs: Dict[str, Tuple] = field(default_factory=dict)  # None for dynamic axes
    precision: OnnxPrecision = OnnxPrecision()


def _from_onnx(model, onnx) -> OnnxInfo:
    graph = model.graph
    FLOAT16 = onnx.TensorProto.FLOAT16
    initializers = {init.name for init in graph.initializer}
    inputs = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        inputs[value.name] = tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in dims)
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    fp16 = (any(init.data_type == FLOAT16 for init in graph.initializer)
            or any(v.type.tensor_type.elem_type == FLOAT16 for v in values)
            or any(node.op_type == "Cast" and any(a.name == "to" and a.i == FLOAT16 for a in node.attribute)
                   for node in graph.node)
            or any(node.op_type == "Constant" and any(a.t.data_type == FLOAT16 for a in node.attribute)
                   for node in graph.node))
    qdq = any(node.op_type in _QDQ_OPS for node in graph.node)
    return OnnxInfo(inputs, OnnxPrecision(fp16=bool(fp16), qdq=bool(qdq), source="onnx graph"))


def _precision_from_metadata(meta: Dict[str, str], fp16_inputs: bool, source: str) -> OnnxPrecision:
    label = str(meta.get("precision", "")).lower()
    return OnnxPrecision(fp16=fp16_inputs or "fp16" in label, qdq="int8" in label or "qdq" in label, source=source)


def _from_onnxruntime(path: str, ort) -> OnnxInfo:
    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise UserError("{} is not a readable ONNX model: {}".format(path, str(exc).splitlines()[0])) from None
    inputs = {node.name: tuple(dim if isinstance(dim, int) else None for dim in node.shape)
              for node in session.get_inputs()}
    fp16_io = any(node.type == "tensor(float16)" for node in session.get_inputs() + session.get_outputs())
    meta = dict(session.get_modelmeta().custom_metadata_map)
    return OnnxInfo(inputs, _precision_from_metadata(meta, fp16_io, "onnxruntime metadata"))


def _from_sidecar(path: str) -> Optional[OnnxInfo]:
    sidecar = read_sidecar(path)
    if sidecar is None:
        return None
    inputs = {name: tuple(shape) for name, shape in (sidecar.get("inputs") or {}).items()}
    recorded = sidecar.get("precision")
    if isinstance(recorded, dict):
        precision = OnnxPrecision(fp16=bool(recorded.get("fp16")), qdq=bool(recorded.get("qdq")),
                                  source="sidecar " + os.path.basename(path) + ".json")
    else:
        precision = _precision_from_metadata(sidecar.get("metadata", {}), False, "sidecar metadata")
    return OnnxInfo(inputs, precision)


def inspect_onnx(path) -> OnnxInfo:
    path = os.fspath(path)
    onnx, model = load_onnx_proto(path)
    if model is not None:
        return _from_onnx(model, onnx)
    sidecar_info = _from_sidecar(path)
    if sidecar_info is not None:
        return sidecar_info
    try:
        import onnxruntime as ort
    except ImportError:
        return OnnxInfo()
    return _from_onnxruntime(path, ort)
