"""Real TensorRT tests: build engines from small exported ONNX models, run them, compare with ONNX Runtime.

They need the tensorrt package, an NVIDIA GPU and Polygraphy (its libcudart wrapper), and skip with the reason
otherwise (conftest). The CUDA-only test (events and graphs of deploy.trt.cuda) needs no TensorRT.
"""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from deploy import infer
from deploy.compare import compare_logits
from deploy.errors import UserError
from deploy.images import SAMPLES_DIR, walk_images
from deploy.metadata import read_model_info, read_onnx_metadata, sidecar_path
from deploy.preprocess import preprocess_file
from deploy.runners import OnnxRuntimeRunner, TensorRTRunner
from deploy.trt.build import BuildOptions, build_engine

pytestmark = [pytest.mark.gpu]


def images_batch(onnx_path, paths):
    spec = read_model_info(onnx_path).preprocess
    return np.stack([preprocess_file(path, spec) for path in paths]).astype(np.float32)


def ort_logits(onnx_path, batch):
    with OnnxRuntimeRunner(onnx_path) as runner:
        return runner.infer({"input": batch})["logits"]


@pytest.fixture(scope="module")
def digits_images(digits_split):
    return walk_images(digits_split[1])[:16]


@pytest.fixture(scope="module")
def calibrated(digits_eca_onnx, digits_split, tmp_path_factory):
    """The digits model's Q/DQ INT8 and FP16 ONNX models and calibration cache, stamped for this TensorRT."""
    import tensorrt as trt
    from calibration.api import calibrate
    model = str(tmp_path_factory.mktemp("calibrated") / "digits.onnx")
    shutil.copy(digits_eca_onnx, model)
    return calibrate(model, digits_split[0], num_images=64, trt_version=trt.__version__, progress=False)


def test_cuda_events_and_graphs_of_the_shipped_binding():
    from deploy.trt.cuda import device_info
    from tools.gpu_check import graph_round_trip
    assert device_info().major >= 5
    same, elapsed_ms = graph_round_trip(np.arange(1 << 20, dtype=np.float32))
    assert same and elapsed_ms >= 0


@pytest.fixture(scope="module")
def tiny_engine(tiny_imagenet_onnx, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("engines") / "tiny.engine")
    return build_engine(tiny_imagenet_onnx, path, BuildOptions(min_batch=1, opt_batch=2, max_batch=4))


@pytest.mark.tensorrt
def test_fp32_engine_matches_onnxruntime(digits_eca_onnx, digits_images, tmp_path):
    import tensorrt as trt
    result = build_engine(digits_eca_onnx, str(tmp_path / "fp32.engine"), BuildOptions(max_batch=16))
    assert result.precision == "fp32" and os.path.getsize(result.engine_path) == result.engine_size
    sidecar = json.load(open(sidecar_path(result.engine_path)))
    assert sidecar["tensorrt_version"] == trt.__version__ and sidecar["metadata"] == read_onnx_metadata(digits_eca_onnx)
    assert sidecar["device"]["compute_capability"] and sidecar["source_onnx"]["sha256"]
    assert "trtexec --onnx=" in result.trtexec

    batch = images_batch(digits_eca_onnx, digits_images)
    with TensorRTRunner(result.engine_path) as runner:
        logits = runner.infer({"input": batch})["logits"]
        assert runner.compute_times == []  # GPU compute time is measured on the CUDA-graph path
    assert sidecar["precision"] == "fp32" and sidecar["trt_flags"] in ([], ["STRONGLY_TYPED"])
    comparison = compare_logits(ort_logits(digits_eca_onnx, batch), logits, atol=1e-3, rtol=1e-3)  # TF32 is off
    assert comparison and comparison.top1_agreement == 1.0, comparison.to_dict()


@pytest.mark.tensorrt
@pytest.mark.parametrize("which", ["fp16", "int8"])
def test_fp16_and_int8_engines_are_what_they_say(calibrated, digits_eca_onnx, digits_images, tmp_path, which):
    model = calibrated.fp16_model if which == "fp16" else calibrated.int8_models["tensorrt"]
    result = build_engine(model, None, BuildOptions(max_batch=16))
    assert result.precision == which and result.engine_path.endswith(which + ".engine")
    assert result.layer_precisions[which] > 0  # the post-build check: the engine really runs that precision
    if which == "fp16":
        assert result.layer_precisions["int8"] == 0  # never INT8 under an FP16 name
    batch = images_batch(digits_eca_onnx, digits_images)
    with TensorRTRunner(result.engine_path) as runner:
        logits = runner.infer({"input": batch})["logits"]
    comparison = compare_logits(ort_logits(digits_eca_onnx, batch), logits)
    assert comparison.cosine_similarity > 0.99 and comparison.top1_agreement >= 14 / 16, comparison.to_dict()


@pytest.mark.tensorrt
def test_implicit_int8_from_the_calibration_cache(calibrated, tmp_path):
    import tensorrt as trt
    from deploy.trt.version import TrtVersion
    if not TrtVersion.parse(trt.__version__).has_implicit_int8:
        pytest.skip("TensorRT {} has no implicit INT8".format(trt.__version__))
    model = calibrated.fp16_model.replace(".fp16.onnx", ".onnx")
    result = build_engine(model, None, BuildOptions(implicit_int8=True, calib_cache=calibrated.calib_cache))
    assert result.precision == "int8-implicit" and result.layer_precisions["int8"] > 0


@pytest.mark.tensorrt
def test_dynamic_profile_runs_batch_1_and_max(tiny_engine, tiny_imagenet_onnx):
    assert tiny_engine.profiles == [{"input": "input", "min": [1, 3, 32, 32], "opt": [2, 3, 32, 32],
                                     "max": [4, 3, 32, 32]}]
    paths = walk_images(SAMPLES_DIR)
    with TensorRTRunner(tiny_engine.engine_path) as runner:
        assert runner.profile("input") == ((1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32))
        for count in (1, 4, 1):
            batch = images_batch(tiny_imagenet_onnx, paths[:count])
            logits = runner.infer({"input": batch})["logits"]
            assert logits.shape == (count, 1000)
            assert compare_logits(ort_logits(tiny_imagenet_onnx, batch), logits, atol=1e-3, rtol=1e-2)
        with pytest.raises(UserError, match=r"batch 5 is outside the engine's profile range 1~4"):
            runner.infer({"input": images_batch(tiny_imagenet_onnx, paths[:5])})


@pytest.mark.tensorrt
def test_cuda_graph_replays_the_same_result(tiny_engine, tiny_imagenet_onnx):
    batch = images_batch(tiny_imagenet_onnx, walk_images(SAMPLES_DIR)[:2])
    with TensorRTRunner(tiny_engine.engine_path) as plain:
        expected = plain.infer({"input": batch})["logits"]
    with TensorRTRunner(tiny_engine.engine_path, use_cuda_graph=True) as graphed:
        for _ in range(3):
            np.testing.assert_allclose(graphed.infer({"input": batch})["logits"], expected, rtol=1e-5, atol=1e-5)
        described = graphed.describe()
        assert described["cuda_graph"] or any("CUDA graph" in note for note in described["notes"])
        if described["cuda_graph"]:
            assert len(graphed.compute_times) == 3 and all(t > 0 for t in graphed.compute_times)


@pytest.mark.tensorrt
def test_stale_sidecar_is_refused_before_loading(tiny_engine, tmp_path):
    engine = str(tmp_path / "copy.engine")
    shutil.copy(tiny_engine.engine_path, engine)
    sidecar = json.load(open(tiny_engine.sidecar_path))
    for key, value, message in (("tensorrt_version", "7.2.3", "built with TensorRT 7.2.3"),
                                ("device", {"name": "Old GPU", "compute_capability": "5.3"}, "built for Old GPU")):
        stale = dict(sidecar, **{key: value})
        with open(sidecar_path(engine), "w") as handle:
            json.dump(stale, handle)
        with pytest.raises(UserError, match=message):
            TensorRTRunner(engine).activate()


@pytest.mark.tensorrt
def test_engine_cache_builds_once(tiny_imagenet_onnx, tmp_path):
    import tensorrt as trt
    from deploy.trt.engine_cache import ensure_engine
    options = BuildOptions(min_batch=1, opt_batch=1, max_batch=2)
    path, built = ensure_engine(tiny_imagenet_onnx, options, cache_dir=str(tmp_path))
    assert built and ".trt{}.".format(trt.__version__) in path and path.endswith(".fp32.engine")
    assert ensure_engine(tiny_imagenet_onnx, options, cache_dir=str(tmp_path)) == (path, False)


@pytest.mark.tensorrt
def test_infer_with_trt_matches_onnxruntime(tiny_imagenet_onnx, tmp_path, capsys):
    def run(*extra):
        assert infer.main([tiny_imagenet_onnx, SAMPLES_DIR, "--json", "--top-k", "1"] + list(extra)) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return lines[:-1], lines[-1]["summary"]

    reference, _ = run()
    results, summary = run("--trt", "--engine-cache", str(tmp_path), "--batch", "3", "--cuda-graph")
    assert summary["runner"]["backend"] == "tensorrt" and summary["compute"]["runs"] == 3
    for ours, theirs in zip(results, reference):
        assert abs(ours["probs"][0] - theirs["probs"][0]) < 1e-3


@pytest.mark.tensorrt
@pytest.mark.skipif(shutil.which("trtexec") is None, reason="trtexec is not on PATH")
def test_trtexec_loads_the_plain_engine(tiny_engine):
    proc = subprocess.run(["trtexec", "--loadEngine=" + tiny_engine.engine_path, "--shapes=input:2x3x32x32",
                           "--iterations=1", "--warmUp=0", "--duration=0"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
