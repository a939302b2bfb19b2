"""Bundles of the tiny 1000-class model, as it is and with its normalization in the graph, for the consumer tests.

The digits bundle (tests/conftest.py: FP32, FP16 and Q/DQ INT8 of a trained model, with its class names)
is the real-data end-to-end case; these tiny ones are quick and cover what the digits models do not.
"""
import pytest


@pytest.fixture(scope="session")
def in_graph_onnx(tmp_path_factory):
    """The tiny model exported with `--normalize-in-graph`: RGB pixels 0-255 in, (x/255 - mean)/std as nodes."""
    from exporter import export_model
    path = str(tmp_path_factory.mktemp("in_graph") / "tiny_in_graph.onnx")
    result = export_model("eca_resnet18", path, input_size=32, stem_width=16, do_simplify=False,
                          parity_batch_sizes=(2,), preprocess_options={"normalize_in_graph": True})
    assert result.parity, result.parity.to_dict()
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tiny_imagenet_onnx, in_graph_onnx, tmp_path_factory):
    """(bundle folder, BundleResult) of both tiny models, engines profiled up to batch 4."""
    from bundling.bundle import bundle
    result = bundle([tiny_imagenet_onnx, in_graph_onnx], tmp_path_factory.mktemp("tiny_bundle") / "b", max_batch=4)
    return result.output, result
