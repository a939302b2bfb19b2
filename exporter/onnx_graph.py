"""Tracing to ONNX, the full checker, onnxsim, and metadata. No file is written here."""
import io
import logging
import warnings
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import numpy_helper

from deploy.errors import UserError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"

log = logging.getLogger(__name__)


def trace_to_onnx(model, input_size: int, opset: int, batch: Optional[int]) -> onnx.ModelProto:
    """TorchScript-based export: it gives the plain static graph TensorRT and onnxsim handle best."""
    import torch  # here, so the graph utilities below serve calibration without loading torch

    example = torch.zeros(batch or 1, 3, input_size, input_size)
    dynamic_axes = None if batch else {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-exporter deprecation notice is not the user's concern
        try:
            torch.onnx.export(
                model, (example,), buffer, dynamo=False, opset_version=opset, do_constant_folding=True,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes,
            )
        except (RuntimeError, ValueError) as exc:  # the message carries the whole traced graph: keep line one
            raise UserError("torch cannot export this model at opset {}: {}".format(
                opset, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)) from None
    return onnx.load_from_string(buffer.getvalue())


def full_check(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise UserError("exported ONNX model fails onnx.checker: {}".format(str(exc).splitlines()[0])) from None


def simplify(model: onnx.ModelProto) -> Tuple[onnx.ModelProto, Optional[str]]:
    """Run onnxsim; on failure keep the unsimplified model and return why, so the caller can say so."""
    try:
        import onnxsim
        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:  # onnxsim raises plain RuntimeErrors from C++ on odd graphs
        return model, "onnxsim failed ({}); kept the unsimplified model".format(str(exc).splitlines()[0])
    if not ok:
        return model, "onnxsim could not validate its result; kept the unsimplified model"
    return simplified, None


def set_metadata(model: onnx.ModelProto, metadata: Dict[str, str]) -> onnx.ModelProto:
    merged = {prop.key: prop.value for prop in model.metadata_props}
    merged.update(metadata)
    del model.metadata_props[:]
    for key in sorted(merged):
        model.metadata_props.add(key=key, value=str(merged[key]))
    model.producer_name = "eca-deploy"
    return model


def op_histogram(model: onnx.ModelProto) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


class GraphIndex:
    """Producers and consumers of an ONNX graph by tensor name, for the graph passes of export and calibration.

    A snapshot: a pass that adds or removes nodes builds a new index.
    """

    def __init__(self, model: onnx.ModelProto):
        self.nodes: List[onnx.NodeProto] = list(model.graph.node)
        self.initializers: Dict[str, onnx.TensorProto] = {init.name: init for init in model.graph.initializer}
        self.outputs = {output.name for output in model.graph.output}
        self.producer: Dict[str, onnx.NodeProto] = {}
        self.consumers: Dict[str, List[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def is_constant(self, name: str) -> bool:
        node = self.producer.get(name)
        return name in self.initializers or (node is not None and node.op_type == "Constant")

    def constant(self, name: str) -> Optional[np.ndarray]:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute:
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def parents(self, node: onnx.NodeProto) -> List[onnx.NodeProto]:
        return [self.producer[name] for name in node.input if name in self.producer]

    def children(self, node: onnx.NodeProto) -> List[onnx.NodeProto]:
        return [child for name in node.output for child in self.consumers.get(name, [])]
