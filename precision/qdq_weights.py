"""Q/DQ weights stored as INT8: each QuantizeLinear of a constant FP32 weight is computed once, here.

ONNX Runtime's quantizer with ``AddQDQPairToWeight`` keeps every Conv/Gemm weight in FP32 behind a
QuantizeLinear -> DequantizeLinear pair, so a Q/DQ model is as large as the FP32 one. The Q of a constant is a
constant: storing its INT8 result (the form of ModelOpt's ``dq_only`` export and of ONNX Runtime's own QDQ
models) leaves ``DequantizeLinear(int8 weight)`` in front of the Conv, a quarter of the bytes, and the same
numbers: DequantizeLinear reads exactly the INT8 values the QuantizeLinear would have produced at run time.

Which TensorRT accepts that form, with sources: docs/TENSORRT_VERSIONS.md ("INT8 weights").
"""
from typing import Dict, List

import numpy as np


def quantize_like_onnx(weight: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear of ``weight``: saturate(round_half_to_even(weight / scale) + zero_point), per ``axis``
    when ``scale`` has one value per slice. Division in float32, as ONNX Runtime's kernel computes it."""
    info = np.iinfo(zero_point.dtype)
    shape = [1] * weight.ndim
    if scale.size > 1:
        shape[axis] = scale.size
    scale = scale.astype(np.float32).reshape(shape)
    zero = zero_point.astype(np.int32).reshape(shape if zero_point.size > 1 else [1] * weight.ndim)
    scaled = np.rint(weight.astype(np.float32) / scale).astype(np.int32) + zero
    return np.clip(scaled, info.min, info.max).astype(zero_point.dtype)


def store_weights_int8(model) -> List[str]:
    """Replace each QuantizeLinear of an FP32 initializer (in place) by the INT8 initializer it computes; the
    DequantizeLinear after it stays. Returns the weight names stored as INT8. Activations are not touched."""
    from onnx import TensorProto, numpy_helper
    initializers: Dict[str, object] = {init.name: init for init in model.graph.initializer}
    readers: Dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    stored, dead = [], []
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3:
            continue
        weight, scale, zero = (initializers.get(name) for name in node.input[:3])
        if weight is None or scale is None or zero is None or weight.data_type != TensorProto.FLOAT:
            continue
        zero_point = numpy_helper.to_array(zero)
        if zero_point.dtype != np.int8:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        values = quantize_like_onnx(numpy_helper.to_array(weight), numpy_helper.to_array(scale), zero_point, axis)
        model.graph.initializer.append(numpy_helper.from_array(values, node.output[0]))
        dead.append(node)
        stored.append(weight.name)
    for node in dead:
        model.graph.node.remove(node)
        for name in node.input:
            readers[name] -= 1
    for init in list(model.graph.initializer):
        if readers.get(init.name, 1) <= 0 and not _is_graph_output(model, init.name):
            model.graph.initializer.remove(init)
    return stored


def _is_graph_output(model, name: str) -> bool:
    return any(output.name == name for output in model.graph.output)


def weights_behind_qdq(model) -> List[str]:
    """The inverse, for a TensorRT whose parser would refuse INT8 weights: each INT8 initializer feeding a
    DequantizeLinear becomes FP32 weights (its dequantized values) behind a QuantizeLinear with the same scale, zero
    point and axis, which computes the same INT8 values again. In place; returns the weight names."""
    from onnx import TensorProto, helper, numpy_helper
    initializers = {init.name: init for init in model.graph.initializer}
    restored = []
    for position, node in enumerate(list(model.graph.node)):
        if node.op_type != "DequantizeLinear" or len(node.input) < 3:
            continue
        quantized, scale, zero = (initializers.get(name) for name in node.input[:3])
        if quantized is None or scale is None or zero is None or quantized.data_type != TensorProto.INT8:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        values, scales = numpy_helper.to_array(quantized).astype(np.float32), numpy_helper.to_array(scale)
        shape = [1] * values.ndim
        if scales.size > 1:
            shape[axis] = scales.size
        zero_point = numpy_helper.to_array(zero).astype(np.float32).reshape(shape if zero.dims else [1] * values.ndim)
        weight = ((values - zero_point) * scales.astype(np.float32).reshape(shape)).astype(np.float32)
        name = quantized.name + "_fp32"
        model.graph.initializer.remove(quantized)
        model.graph.initializer.append(numpy_helper.from_array(weight, name))
        model.graph.node.insert(list(model.graph.node).index(node), helper.make_node(
            "QuantizeLinear", [name, node.input[1], node.input[2]], [quantized.name], name=name + "_QuantizeLinear",
            axis=axis))
        restored.append(name)
    return restored
