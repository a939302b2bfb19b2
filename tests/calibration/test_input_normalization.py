"""INT8 from a model exported with --normalize-in-graph, calibrated on real digits read through its own
metadata (pixels in [0, 255]): the normalization stays float, the first Q/DQ sits on the normalized image that
the first convolution reads, with the plain model's scale, and the INT8 models agree with the plain ones."""
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from calibration.api import calibrate
from data.datasets import load_dataset
from deploy.metadata import read_model_info
from deploy.preprocess import network_input
from exporter.input_normalization import NORMALIZED_NAME, normalization_nodes

TARGETS = ("tensorrt", "cpu")


def _calibrated(source, folder, digits_split):
    model = str(folder / "model.onnx")
    shutil.copy(source, model)
    # 64 images and one method keep it quick; both models see the same files (the same stratified sample).
    result = calibrate(model, data_dir=digits_split[0], targets=TARGETS, method="entropy", num_images=64,
                       fp16=False, progress=False, cache_dir=str(folder / "cache"))
    return {target: onnx.load(path) for target, path in result.int8_models.items()}


@pytest.fixture(scope="module")
def int8_pairs(digits_eca_in_graph_onnx, digits_eca_onnx, digits_split, tmp_path_factory):
    """{target: (in-graph INT8 model, plain INT8 model)}."""
    in_graph = _calibrated(digits_eca_in_graph_onnx, tmp_path_factory.mktemp("in_graph"), digits_split)
    plain = _calibrated(digits_eca_onnx, tmp_path_factory.mktemp("plain"), digits_split)
    return {target: (in_graph[target], plain[target]) for target in TARGETS}


def _producers(model):
    return {out: node for node in model.graph.node for out in node.output}


def _input_scale(model, conv):
    """The scale of the Q/DQ pair in front of ``conv``'s data input."""
    dq = _producers(model)[conv.input[0]]
    assert dq.op_type == "DequantizeLinear"
    q = _producers(model)[dq.input[0]]
    assert q.op_type == "QuantizeLinear"
    inits = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    return q.input[0], float(inits[q.input[1]])


@pytest.mark.parametrize("target", TARGETS)
def test_normalization_stays_float_and_the_first_q_is_on_the_conv_input(int8_pairs, target):
    in_graph, plain = int8_pairs[target]
    names = normalization_nodes(in_graph)
    assert len(names) == 3
    producers = _producers(in_graph)
    nodes = {node.name: node for node in in_graph.graph.node}
    for name in names:
        assert nodes[name].op_type in ("Div", "Sub")
        for tensor in nodes[name].input:
            assert tensor not in producers or not producers[tensor].op_type.endswith("QuantizeLinear"), name
    readers_of_pixels = [node for node in in_graph.graph.node if "input" in node.input]
    assert [node.name for node in readers_of_pixels] == [names[0]]  # no Q on the raw pixels

    first_conv = next(node for node in in_graph.graph.node if node.op_type == "Conv")
    plain_conv = next(node for node in plain.graph.node if node.op_type == "Conv")
    quantized, scale = _input_scale(in_graph, first_conv)
    plain_quantized, plain_scale = _input_scale(plain, plain_conv)
    assert quantized == NORMALIZED_NAME and plain_quantized == "input"
    assert scale == pytest.approx(plain_scale, rel=1e-6)  # the full range of the same normalized image


@pytest.mark.parametrize("target", TARGETS)
def test_in_graph_int8_agrees_with_the_plain_int8_model(int8_pairs, digits_eca_in_graph_onnx, digits_split,
                                                        target, tmp_path):
    spec = read_model_info(digits_eca_in_graph_onnx).preprocess
    val = load_dataset(digits_split[1], spec, num_images=120, seed=1, progress=False, cache_dir=str(tmp_path))
    outputs = []
    for model, inputs in zip(int8_pairs[target], (val.array, network_input(val.array, spec))):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {"input": inputs})[0])
    in_graph, plain = outputs
    assert np.array_equal(np.argmax(in_graph, axis=1), np.argmax(plain, axis=1))
    assert np.abs(in_graph - plain).max() <= 1e-3 * np.abs(plain).max()
    assert np.mean(np.argmax(in_graph, axis=1) == val.labels) >= 0.9
