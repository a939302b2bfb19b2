"""``export --normalize-in-graph``: the per-channel normalization as explicit nodes at the model's input.

The graph input then takes RGB pixels in [0, 255] (float32, NCHW) and three nodes compute
``(x / 255 - mean) / std``, the same three float32 operations as deploy.preprocess.normalize_pixels, so the
model on pixels gives the bits the plain model gives on normalized images. DeepStream's Gst-nvinfer can only
apply one scale to all channels; with this it feeds pixels (net-scale-factor=1, zero offsets) and stays exact.

The nodes are inserted into the ONNX graph after onnxsim (which therefore cannot fold them) and are not folded
into the first convolution's weights: that convolution zero-pads its input, and a zero of the normalized image
is not a zero pixel, so folding would change every border output. Inserting them into the graph, rather than
exporting a wrapping torch module, keeps every other node name (the PyTorch module scopes the attention
analysis reads). Later stages find the nodes by their names: the Q/DQ placement and the FP16 conversion
leave them in float32, and calibration keeps the full range of their output, the normalized image.
"""
from typing import List, Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

from deploy.preprocess import PreprocessSpec

from .onnx_graph import INPUT_NAME

PREFIX = "input_normalization/"
NORMALIZED_NAME = PREFIX + "normalized"
# By full name: the quantizer and the FP16 converter name the nodes they add after these tensors and nodes.
NODE_NAMES = (PREFIX + "scale", PREFIX + "center", PREFIX + "standardize")


def add_input_normalization(model: onnx.ModelProto, spec: PreprocessSpec) -> onnx.ModelProto:
    """Insert Div(255) -> Sub(mean) -> Div(std) between the graph input and its readers, in place."""
    constants = {
        PREFIX + "pixel_scale": np.array(255.0, dtype=np.float32),
        PREFIX + "mean": np.asarray(spec.mean, dtype=np.float32).reshape(1, 3, 1, 1),
        PREFIX + "std": np.asarray(spec.std, dtype=np.float32).reshape(1, 3, 1, 1),
    }
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name == INPUT_NAME:
                node.input[index] = NORMALIZED_NAME
    scale, center, standardize = NODE_NAMES
    nodes = [
        helper.make_node("Div", [INPUT_NAME, PREFIX + "pixel_scale"], [PREFIX + "scaled"], name=scale),
        helper.make_node("Sub", [PREFIX + "scaled", PREFIX + "mean"], [PREFIX + "centered"], name=center),
        helper.make_node("Div", [PREFIX + "centered", PREFIX + "std"], [NORMALIZED_NAME], name=standardize),
    ]
    for position, node in enumerate(nodes):  # first, so the graph stays in topological order
        model.graph.node.insert(position, node)
    model.graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    return model


def normalization_nodes(model: onnx.ModelProto) -> List[str]:
    """Names of the inserted normalization nodes (empty for a model that takes normalized images)."""
    return [node.name for node in model.graph.node if node.name in NODE_NAMES]


def normalized_input(model: onnx.ModelProto) -> Optional[str]:
    """The tensor holding the normalized image inside an in-graph model (what the first convolution reads)."""
    outputs = {output for node in model.graph.node if node.name in NODE_NAMES for output in node.output}
    return NORMALIZED_NAME if NORMALIZED_NAME in outputs else None
