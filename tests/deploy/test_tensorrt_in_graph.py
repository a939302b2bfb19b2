"""TensorRT on a model exported with --normalize-in-graph: its engines, fed pixels, give the plain model's logits
on normalized images. Needs tensorrt, an NVIDIA GPU and Polygraphy (skips with the reason otherwise)."""
import numpy as np
import pytest

from deploy.compare import compare_logits
from deploy.images import walk_images
from deploy.metadata import read_model_info
from deploy.preprocess import network_input, preprocess_file
from deploy.runners import OnnxRuntimeRunner, TensorRTRunner
from deploy.trt.build import BuildOptions, build_engine

pytestmark = [pytest.mark.gpu, pytest.mark.tensorrt]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_on_pixels_matches_the_plain_model(digits_eca_in_graph_onnx, digits_eca_onnx, digits_split, tmp_path,
                                                  precision):
    from precision.fp16 import convert_to_fp16_file
    model = digits_eca_in_graph_onnx
    if precision == "fp16":
        model = convert_to_fp16_file(model, tmp_path / "in_graph.fp16.onnx").path
    result = build_engine(model, str(tmp_path / "in_graph.{}.engine".format(precision)), BuildOptions(max_batch=16))
    spec = read_model_info(result.engine_path).preprocess
    assert spec.normalize_in_graph  # the sidecar carries it to the device
    pixels = np.stack([preprocess_file(path, spec) for path in walk_images(digits_split[1])[:16]])
    with TensorRTRunner(result.engine_path) as runner:
        logits = runner.infer({"input": pixels})["logits"]
    with OnnxRuntimeRunner(digits_eca_onnx) as runner:
        expected = runner.infer({"input": network_input(pixels, spec)})["logits"]
    if precision == "fp32":
        comparison = compare_logits(expected, logits, atol=1e-3, rtol=1e-3)  # TF32 is off
        assert comparison and comparison.top1_agreement == 1.0, comparison.to_dict()
    else:  # the bounds of the plain FP16 engine's test (test_tensorrt_engine.py)
        comparison = compare_logits(expected, logits)
        assert comparison.cosine_similarity > 0.99 and comparison.top1_agreement >= 14 / 16, comparison.to_dict()
