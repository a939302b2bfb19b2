"""FP16: a strongly typed half-precision ONNX model with float32 input and output (onnxconverter-common).

TensorRT 10's strongly typed networks and TensorRT 11 take their precision from the ONNX types, so the FP16
model is an FP16 graph, not an FP32 graph plus a builder flag. ``keep_io_types`` adds Casts at the input and
output, so callers feed and read float32 exactly as with the FP32 model. It runs on ONNX Runtime's CPU
provider too (ORT inserts casts around ops that lack a CPU FP16 kernel), which is how it is checked here.

Numerically sensitive ops stay FP32 (``KEEP_FP32_OPS``): Softmax and LogSoftmax (exp, and a sum over all
classes) where a model has them. Keeping the global average pools in FP32 was measured and gave nothing: on the
digits ECA/SE-ResNet-18 and on ECA-ResNet-50 at 224 the FP16 model's logits differed from FP32 by the same
amount either way (max 0.0054 vs 0.0059 and 6.9e-4 vs 6.9e-4), with every top-1 equal. ONNX Runtime's CPU
runs FP16 ops in FP32 between casts, so that check covers the FP16 storage of activations and weights, not
FP16 accumulation inside a kernel; the pools therefore stay FP16, as TensorRT would run them.
"""
import os
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from deploy.errors import UserError

KEEP_FP32_OPS = ("Softmax", "LogSoftmax")


@dataclass
class Fp16Result:
    path: str
    source: str
    kept_fp32_nodes: List[str] = field(default_factory=list)
    size_bytes: int = 0

    def to_dict(self) -> Dict[str, object]:
        return {"path": self.path, "source": self.source, "precision": "fp16",
                "kept_fp32_nodes": self.kept_fp32_nodes, "size_bytes": self.size_bytes}


def fp16_path_for(fp32_path) -> str:
    """``model.onnx`` -> ``model.fp16.onnx`` beside it."""
    stem, _ = os.path.splitext(os.fspath(fp32_path))
    return stem + ".fp16.onnx"


def convert_to_fp16(model, keep_fp32_ops: Sequence[str] = KEEP_FP32_OPS, metadata: Optional[Dict[str, str]] = None):
    """An FP16 copy of ``model`` (onnx.ModelProto, FP32) with float32 I/O and ``precision=fp16`` metadata."""
    import onnx
    from onnxconverter_common import float16
    from exporter.input_normalization import normalization_nodes

    source_props = {prop.key: prop.value for prop in model.metadata_props}
    if source_props.get("precision", "fp32") != "fp32":
        raise UserError("the model is already {}; convert the FP32 model".format(source_props["precision"]))
    block = set(float16.DEFAULT_OP_BLOCK_LIST) | set(keep_fp32_ops)
    try:
        with warnings.catch_warnings():
            # It warns once per weight below FP16's range that it clamps to 1e-7: noise for a user.
            warnings.simplefilter("ignore", UserWarning)
            # An in-graph input normalization stays FP32 (three cheap ops), so the FP16 graph starts from the
            # same once-rounded normalized image as the FP16 model that is fed normalized images.
            converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=sorted(block),
                                                         node_block_list=normalization_nodes(model))
    except ValueError as exc:  # e.g. "already converted to float16"
        raise UserError("cannot convert to FP16: {}".format(str(exc).splitlines()[0])) from None
    props = dict(source_props)
    props.update(metadata or {})
    props["precision"] = "fp16"
    onnx.helper.set_model_props(converted, dict(sorted(props.items())))
    return converted


def convert_to_fp16_file(fp32_path, output=None, keep_fp32_ops: Sequence[str] = KEEP_FP32_OPS) -> Fp16Result:
    """Write the FP16 model of ``fp32_path`` (default ``<stem>.fp16.onnx`` beside it) and check it loads."""
    import onnx
    from deploy.fileio import atomic_path
    from exporter.attention_forms import to_lean
    fp32_path = os.fspath(fp32_path)
    if not os.path.isfile(fp32_path):
        raise UserError("no such model file: {}".format(fp32_path))
    try:
        model = onnx.load(fp32_path)
    except Exception as exc:  # onnx raises DecodeError and others for a corrupt file
        raise UserError("{} is not a readable ONNX model: {}".format(fp32_path, exc)) from None
    to_lean(model)  # the nchwc form's convs of ones only help ORT's FP32 CPU layout; FP16 is for GPUs
    converted = convert_to_fp16(model, keep_fp32_ops)
    output = os.path.abspath(os.fspath(output) if output else fp16_path_for(fp32_path))
    with atomic_path(output) as tmp:
        onnx.save(converted, tmp)
        onnx.checker.check_model(tmp, full_check=True)
    kept = [node.name for node in converted.graph.node if node.op_type in keep_fp32_ops]
    return Fp16Result(path=output, source=os.path.abspath(fp32_path), kept_fp32_nodes=kept,
                      size_bytes=os.path.getsize(output))
