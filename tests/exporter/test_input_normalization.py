"""export --normalize-in-graph on the trained digits model: explicit nodes before the first convolution, the
metadata, and logits equal to the plain model's on the same real images (FP32 and FP16)."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from data.datasets import load_dataset
from deploy.images import sample_images
from deploy.metadata import read_model_info
from deploy.preprocess import network_input, preprocess_file
from exporter.input_normalization import NORMALIZED_NAME, normalization_nodes

EXACT = 1e-4  # the bound; the two models compute the same float32 operations, so the error is 0


def _logits(path, inputs):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": np.ascontiguousarray(inputs, dtype=np.float32)})[0]


@pytest.fixture(scope="module")
def digits_pixels(digits_split, digits_eca_in_graph_onnx, tmp_path_factory):
    """Held-out digits as the in-graph model takes them: float32 RGB pixels in [0, 255]."""
    spec = read_model_info(digits_eca_in_graph_onnx).preprocess
    return load_dataset(digits_split[1], spec, num_images=200, seed=0, progress=False,
                        cache_dir=str(tmp_path_factory.mktemp("cache")))


def test_metadata_records_it_and_the_model_takes_pixels(digits_eca_in_graph_onnx, digits_eca_onnx, digits_pixels):
    in_graph, plain = read_model_info(digits_eca_in_graph_onnx), read_model_info(digits_eca_onnx)
    assert in_graph.preprocess.normalize_in_graph and not plain.preprocess.normalize_in_graph
    meta = {p.key: p.value for p in onnx.load(digits_eca_in_graph_onnx).metadata_props}
    assert json.loads(meta["normalize_in_graph"]) is True
    assert "normalization in the graph" in in_graph.preprocess.describe()
    pixels = digits_pixels.array
    assert pixels.dtype == np.float32 and pixels.min() == 0.0 and pixels.max() == 255.0
    assert np.array_equal(pixels, np.round(pixels))  # whole pixel values: no scaling, no normalization


def test_logits_equal_the_plain_model_on_normalized_images(digits_eca_in_graph_onnx, digits_eca_onnx,
                                                           digits_pixels):
    spec = read_model_info(digits_eca_in_graph_onnx).preprocess
    pixels, labels = digits_pixels.array, digits_pixels.labels
    normalized = network_input(pixels, spec)
    in_graph, plain = _logits(digits_eca_in_graph_onnx, pixels), _logits(digits_eca_onnx, normalized)
    assert np.abs(in_graph - plain).max() <= EXACT
    assert np.mean(np.argmax(in_graph, axis=1) == labels) >= 0.9  # a trained model on real images


def test_on_the_sample_photos_too(digits_eca_in_graph_onnx, digits_eca_onnx):
    """Photos (skimage's) exercise all three channels with their different mean and std."""
    in_spec, plain_spec = (read_model_info(p).preprocess for p in (digits_eca_in_graph_onnx, digits_eca_onnx))
    paths = sample_images()
    pixels = np.stack([preprocess_file(p, in_spec) for p in paths])
    normalized = np.stack([preprocess_file(p, plain_spec) for p in paths])
    assert np.array_equal(network_input(pixels, in_spec), normalized)  # the one rule, bit for bit
    assert np.abs(_logits(digits_eca_in_graph_onnx, pixels) - _logits(digits_eca_onnx, normalized)).max() <= EXACT


def test_explicit_nodes_before_the_first_conv_and_its_weights_unchanged(digits_eca_in_graph_onnx, digits_eca_onnx):
    model, plain = onnx.load(digits_eca_in_graph_onnx), onnx.load(digits_eca_onnx)
    spec = read_model_info(digits_eca_in_graph_onnx).preprocess
    nodes = list(model.graph.node)
    assert [n.op_type for n in nodes[:3]] == ["Div", "Sub", "Div"] and normalization_nodes(model) == [
        n.name for n in nodes[:3]]
    assert nodes[0].input[0] == "input" and nodes[2].output[0] == NORMALIZED_NAME
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    assert constants[nodes[0].input[1]] == np.float32(255.0)
    mean, std = constants[nodes[1].input[1]], constants[nodes[2].input[1]]
    assert mean.shape == std.shape == (1, 3, 1, 1)
    assert np.array_equal(mean.ravel(), np.float32(spec.mean)) and np.array_equal(std.ravel(), np.float32(spec.std))

    first_conv = next(n for n in nodes if n.op_type == "Conv")
    assert first_conv.input[0] == NORMALIZED_NAME
    assert [n.name for n in nodes if "input" in n.input] == [nodes[0].name]  # nothing else reads the pixels
    plain_conv = next(n for n in plain.graph.node if n.op_type == "Conv")
    plain_constants = {init.name: numpy_helper.to_array(init) for init in plain.graph.initializer}
    assert first_conv.name == plain_conv.name  # the module scopes (node names) are kept
    assert np.array_equal(constants[first_conv.input[1]], plain_constants[plain_conv.input[1]])  # not folded
    assert len(nodes) == len(plain.graph.node) + 3


def test_fp16_keeps_the_normalization_in_float32(digits_eca_in_graph_onnx, digits_eca_onnx, digits_pixels, tmp_path):
    from precision.fp16 import convert_to_fp16_file
    spec = read_model_info(digits_eca_in_graph_onnx).preprocess
    in_graph = convert_to_fp16_file(digits_eca_in_graph_onnx, tmp_path / "in_graph.fp16.onnx").path
    plain = convert_to_fp16_file(digits_eca_onnx, tmp_path / "plain.fp16.onnx").path
    model = onnx.load(in_graph)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    floats = {init.name for init in model.graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    names = normalization_nodes(model)
    assert len(names) == 3
    for node in model.graph.node:
        if node.name in names:
            assert node.input[1] in floats
    assert read_model_info(in_graph).preprocess.normalize_in_graph
    pixels = digits_pixels.array[:64]
    # Normalized in float32, then rounded to FP16 once: the same input as the plain FP16 model gets.
    assert np.abs(_logits(in_graph, pixels) - _logits(plain, network_input(pixels, spec))).max() <= EXACT


def test_export_command_option(tmp_path):
    from cli import cli
    out = tmp_path / "r18.onnx"
    result = CliRunner().invoke(cli, ["export", "resnet18", "--num-classes", "4", "--input-size", "32",
                                      "--normalize-in-graph", "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "RGB pixels 0-255 in; normalization in the graph" in result.output and "-> ok" in result.output
    assert read_model_info(str(out)).preprocess.normalize_in_graph
    assert "--normalize-in-graph" in CliRunner().invoke(cli, ["export", "--help"]).output
