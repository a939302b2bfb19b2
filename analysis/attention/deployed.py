"""Reading attention weights out of a deployed ONNX model (FP32, FP16 or INT8 Q/DQ) in ONNX Runtime.

A temporary copy of the model gets one extra graph output per attention block: the output tensor of the
block's Sigmoid node, behind a Cast to float so FP16 models report in FP32. In Q/DQ models the Sigmoid may
feed a QuantizeLinear; its own output is taken, i.e. the weights before they are rounded to 8 bits.

Sigmoid nodes are mapped to blocks by the module scope that the PyTorch exporter writes into node names
("/layer1/layer1.0/eca/sigmoid/Sigmoid" is ``layer1.0.eca.sigmoid``); quantizers and the FP16 converter keep
those names. A model without them is mapped by graph order when it has exactly one Sigmoid per block.
"""
import os
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper

from deploy.errors import UserError
from deploy.runners import OnnxRuntimeRunner
from deploy.runners.execution import infer_all

from .hooks import AttentionBlock

OUTPUT_PREFIX = "attention/"
_PROTOBUF_LIMIT = 2 ** 31 - 1


def scope_path(node_name: str) -> str:
    """"/layer1/layer1.0/eca/sigmoid/Sigmoid" -> "layer1.0.eca.sigmoid" (the exporter's module scope)."""
    parts = [part for part in node_name.split("/") if part][:-1]
    # The exporter names a Sequential child "layer1.0" under "layer1": keep each segment's last component.
    return ".".join(part.rsplit(".", 1)[-1] for part in parts)


def map_sigmoids(graph: onnx.GraphProto, blocks: Sequence[AttentionBlock]) -> Dict[str, str]:
    """{block name: the Sigmoid output tensor that holds its weights}."""
    sigmoids = [node for node in graph.node if node.op_type == "Sigmoid"]
    by_scope = {scope_path(node.name): node.output[0] for node in sigmoids}
    if all(block.sigmoid_path in by_scope for block in blocks):
        return {block.name: by_scope[block.sigmoid_path] for block in blocks}
    if len(sigmoids) == len(blocks):
        return {block.name: node.output[0] for block, node in zip(blocks, sigmoids)}
    raise UserError("cannot find the attention blocks in the ONNX model: it has {} Sigmoid nodes for {} blocks "
                    "and its node names do not carry the PyTorch module scopes (export it with `eca-deploy export`)"
                    .format(len(sigmoids), len(blocks)))


def expose_attention(model: onnx.ModelProto, blocks: Sequence[AttentionBlock]) -> Dict[str, str]:
    """Add a float graph output per block to ``model`` (in place); return {block name: output name}."""
    tensors = map_sigmoids(model.graph, blocks)
    outputs = {}
    for block in blocks:
        name = OUTPUT_PREFIX + block.name
        model.graph.node.append(helper.make_node("Cast", [tensors[block.name]], [name], to=TensorProto.FLOAT,
                                                 name="attention_cast/" + block.name))
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
        outputs[block.name] = name
    return outputs


def detect_precision(model: onnx.ModelProto) -> str:
    """"int8 (Q/DQ)", "fp16" or "fp32", from the graph itself rather than from metadata."""
    ops = {node.op_type for node in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"}:
        return "int8 (Q/DQ)"
    if any(init.data_type == TensorProto.FLOAT16 for init in model.graph.initializer):
        return "fp16"
    return "fp32"


class DeployedAttention:
    """Context manager: the exposed copy of ``onnx_path`` loaded in ONNX Runtime (CPU provider).

    ``infer(batch)`` returns (logits, {block name: (N, C) float32}) for a float32 batch of any size; batching,
    fixed-batch models and padding follow deploy.runners.execution.
    """

    def __init__(self, onnx_path, blocks: Sequence[AttentionBlock], providers: Sequence[str] = ("cpu",),
                 threads: Optional[int] = None):
        self.onnx_path = os.fspath(onnx_path)
        self.blocks = list(blocks)
        self.providers = providers
        self.threads = threads
        self.precision = "unknown"
        self._tmp = None
        self._runner = None
        self._outputs: Dict[str, str] = {}
        self._logits = None

    def __enter__(self) -> "DeployedAttention":
        model = _load(self.onnx_path)
        self.precision = detect_precision(model)
        self._outputs = expose_attention(model, self.blocks)
        self._logits = model.graph.output[0].name
        self._tmp = tempfile.TemporaryDirectory(prefix="eca-attention-")
        path = os.path.join(self._tmp.name, "exposed.onnx")
        _save(model, path)
        del model
        self._runner = OnnxRuntimeRunner(path, providers=self.providers, threads=self.threads,
                                         name=os.path.basename(self.onnx_path))
        try:
            self._runner.activate()
        except BaseException:
            self._tmp.cleanup()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._runner is not None:
            self._runner.deactivate()
        if self._tmp is not None:
            self._tmp.cleanup()

    @property
    def active_providers(self) -> List[str]:
        return self._runner.active_providers if self._runner else []

    def infer(self, batch: np.ndarray) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        count = len(batch)
        out = infer_all(self._runner, batch, max(count, 1))
        weights = {name: out[output].reshape(count, -1).astype(np.float32, copy=False)
                   for name, output in self._outputs.items()}
        return out[self._logits].astype(np.float32, copy=False), weights


def _load(path: str) -> onnx.ModelProto:
    if not os.path.isfile(path):
        raise UserError("no such model file: {}".format(path))
    try:
        return onnx.load(path)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for a corrupt file
        raise UserError("{} is not a readable ONNX model: {}".format(path, str(exc).splitlines()[0])) from None


def _save(model: onnx.ModelProto, path: str) -> None:
    large = model.ByteSize() > _PROTOBUF_LIMIT - (64 << 20)  # leave room for the added nodes
    onnx.save(model, path, save_as_external_data=large, location="exposed.onnx.data" if large else None)
