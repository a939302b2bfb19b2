"""Tiny ONNX models in each precision the TensorRT build plans for (FP32, FP16, Q/DQ INT8), made with onnx.helper.

They are valid graphs (a 3x3 convolution and a global pool, dynamic batch) small enough to write in milliseconds.
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deploy.metadata import ModelInfo
from deploy.preprocess import PreprocessSpec


def write_model(path, precision: str = "fp32", batch=None) -> str:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    if precision == "fp16":
        weight = weight.astype(np.float16)
    nodes, inits, conv_in = [], [numpy_helper.from_array(weight, "w")], "input"
    if precision == "fp16":
        nodes.append(helper.make_node("Cast", ["input"], ["x16"], to=TensorProto.FLOAT16))
        conv_in = "x16"
    if precision == "int8":
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        conv_in = "dq"
    nodes += [helper.make_node("Conv", [conv_in, "w"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("GlobalAveragePool", ["c"], ["p"]),
              helper.make_node("Flatten", ["p"], ["f" if precision == "fp16" else "logits"])]
    if precision == "fp16":
        nodes.append(helper.make_node("Cast", ["f"], ["logits"], to=TensorProto.FLOAT))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                           [batch or "N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch or "N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    # the metadata export writes: deploy.build refuses a model whose preprocessing it cannot state
    info = ModelInfo(arch="tiny", num_classes=4, preprocess=PreprocessSpec(input_size=8, resize_size=9),
                     precision=precision)
    helper.set_model_props(model, info.to_metadata())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)
