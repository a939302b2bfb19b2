"""The PyTorch reference of a model exported with --normalize-in-graph: benchmark-engine and the bundle's
reference feed the artifact pixels and the checkpoint normalized images, and both agree on real digits."""
import numpy as np
import pytest

from benchmark.parity_and_speed import BenchmarkOptions, benchmark_engine
from deploy.errors import UserError

FAST = dict(batch_sizes=(4,), warmup=0, iterations=1, num_images=48, threads=2, progress=False)


@pytest.fixture(autouse=True)
def _private_image_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ECA_DEPLOY_CACHE", str(tmp_path / "cache"))


def test_benchmark_engine_compares_the_in_graph_model_with_pytorch(digits_eca_in_graph_onnx, digits_eca_checkpoint,
                                                                   digits_split):
    result = benchmark_engine([digits_eca_in_graph_onnx], weights=digits_eca_checkpoint, data_dir=digits_split[1],
                              options=BenchmarkOptions(**FAST))
    (onnx,) = result.artifacts
    assert result.reference.top1_accuracy >= 90.0
    assert onnx.top1_agreement == 100.0 and onnx.max_abs_error < 1e-4
    assert onnx.top1_accuracy == result.reference.top1_accuracy


def test_in_graph_and_plain_models_are_not_benchmarked_together(digits_eca_in_graph_onnx, digits_eca_onnx,
                                                                 digits_eca_checkpoint):
    with pytest.raises(UserError, match="disagree on normalize_in_graph"):
        benchmark_engine([digits_eca_onnx, digits_eca_in_graph_onnx], weights=digits_eca_checkpoint,
                         options=BenchmarkOptions(**FAST))


def test_bundle_reference_holds_pixels_and_pytorch_logits_the_model_passes(digits_eca_in_graph_onnx,
                                                                           digits_eca_checkpoint, digits_split):
    from benchmark.bundle_reference import make_bundle_reference
    proof = make_bundle_reference([digits_eca_in_graph_onnx], weights=digits_eca_checkpoint,
                                  data_dir=digits_split[1], num_images=24)
    inputs = proof.data.inputs
    assert inputs.max() > 1.0 and np.array_equal(inputs, np.round(inputs))  # pixels, as the model takes them
    assert [check.status for check in proof.cpu_checks] == ["PASS"]  # deploy.check, the device's own code
