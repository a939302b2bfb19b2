"""LOGIC tests of the build and runner mechanics against a SIMULATED TensorRT and CUDA device. No TensorRT runs.

tests/fake_tensorrt.simulated_tensorrt models the documented API (Builder, OnnxParser, IBuilderConfig, Runtime,
named I/O tensors); its "engine" runs the source ONNX model in ONNX Runtime on the bytes our runner copied to a
numpy-backed "device". So these tests execute our glue code end to end (build flags, profiles, sidecar, engine
file, buffer addresses, copies, CUDA graph capture/replay, the engine cache, deploy.infer --trt). They prove
nothing about TensorRT itself: test_tensorrt_engine.py does that where TensorRT exists.
"""
import json
import os
import sys

import numpy as np
import pytest

from deploy import infer
from deploy.errors import CheckFailedError, UserError
from deploy.images import SAMPLES_DIR, walk_images
from deploy.metadata import read_model_info, read_onnx_metadata, sidecar_path
from deploy.preprocess import preprocess_file
from deploy.runners import OnnxRuntimeRunner, TensorRTRunner
from deploy.trt import cuda as cuda_module
from deploy.trt.build import BuildOptions, build_engine
from tests.fake_tensorrt import JETPACK5, JETPACK6, SimDevice, simulated_tensorrt, tiny_matmul_onnx


@pytest.fixture()
def device(monkeypatch):
    device = SimDevice()
    monkeypatch.setattr(cuda_module, "load_cuda_backend", lambda name=None: device)
    return device


def use_tensorrt(monkeypatch, version, device, **kwargs):
    trt = simulated_tensorrt(version, device, **kwargs)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def batch_of(onnx_path, count):
    spec = read_model_info(onnx_path).preprocess
    return np.stack([preprocess_file(p, spec) for p in walk_images(SAMPLES_DIR)[:count]]).astype(np.float32)


def reference(onnx_path, batch):
    with OnnxRuntimeRunner(onnx_path) as runner:
        return runner.infer({"input": batch})["logits"]


def test_build_writes_plain_engine_and_sidecar(tiny_imagenet_onnx, tmp_path, device, monkeypatch):
    trt = use_tensorrt(monkeypatch, JETPACK6, device)
    timing = str(tmp_path / "timing.cache")
    lines = []
    result = build_engine(tiny_imagenet_onnx, str(tmp_path / "m.engine"),
                          BuildOptions(max_batch=4, workspace_mib=256, opt_level=4, timing_cache=timing),
                          log=lines.append)
    (call,) = [c for c in trt.calls if c[0] == "build"]
    network_flags, builder_flags, pools, verbosity, opt_level = call[1:]
    assert network_flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) and builder_flags == []
    assert pools == {"WORKSPACE": 256 << 20} and verbosity == trt.ProfilingVerbosity.DETAILED and opt_level == 4
    assert "this can take minutes" in lines[0]

    plan = json.loads(open(result.engine_path, "rb").read())  # the file is the plan itself: no header of ours
    assert plan["profile"] == {"input": [[1, 3, 32, 32], [1, 3, 32, 32], [4, 3, 32, 32]]}
    assert open(timing, "rb").read() == b"simulated timing cache"
    sidecar = json.load(open(sidecar_path(result.engine_path)))
    assert sidecar["tensorrt_version"] == "10.3.0" and sidecar["engine"] == "m.engine"
    assert sidecar["device"] == {"name": "Simulated GPU", "compute_capability": "8.7", "dla_core": None}
    assert sidecar["precision"] == "fp32" and sidecar["strongly_typed"] is True
    assert sidecar["metadata"] == read_onnx_metadata(tiny_imagenet_onnx)
    assert sidecar["profiles"] == result.profiles and sidecar["build_options"]["max_batch"] == 4
    assert sidecar["layer_precisions"]["fp32"] == 2 and len(sidecar["source_onnx"]["sha256"]) == 64
    assert sidecar["engine_size"] == os.path.getsize(result.engine_path)
    assert "--stronglyTyped" in sidecar["trtexec"] and "--maxShapes=input:4x3x32x32" in sidecar["trtexec"]
    assert read_model_info(result.engine_path) == read_model_info(tiny_imagenet_onnx)


def test_jetpack5_build_uses_explicit_batch_and_fp16_flag(tmp_path, device, monkeypatch):
    trt = use_tensorrt(monkeypatch, JETPACK5, device)
    fp16 = tiny_matmul_onnx(str(tmp_path / "fp16.onnx"), fp16=True)
    result = build_engine(fp16, str(tmp_path / "fp16.engine"))
    (call,) = [c for c in trt.calls if c[0] == "build"]
    assert call[1] == 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) and call[2] == ["FP16"]
    assert result.precision == "fp16" and result.layer_precisions["fp16"] == 2


def test_parser_errors_name_the_node(tiny_imagenet_onnx, tmp_path, device, monkeypatch):
    use_tensorrt(monkeypatch, JETPACK6, device, parser_error="/stage2/Weird_3")
    with pytest.raises(UserError) as info:
        build_engine(tiny_imagenet_onnx, str(tmp_path / "m.engine"))
    assert "node '/stage2/Weird_3' (Weird): No importer registered for op: Weird" in str(info.value)
    assert not os.path.exists(str(tmp_path / "m.engine"))


def test_rejected_calibration_cache_fails_the_build(tiny_imagenet_onnx, tmp_path, device, monkeypatch):
    from deploy.calib_cache import write_calibration_cache
    cache = write_calibration_cache(str(tmp_path / "c.cache"), {"input": 0.02, "/conv1/Conv_output_0": 0.1},
                                    "10.3.0")
    use_tensorrt(monkeypatch, JETPACK6, device, reject_calibration_cache=True)
    with pytest.raises(CheckFailedError, match="did not accept the calibration cache"):
        build_engine(tiny_imagenet_onnx, str(tmp_path / "m.engine"), BuildOptions(calib_cache=cache))
    assert not os.path.exists(str(tmp_path / "m.engine"))  # no engine that pretends to be INT8

    trt = use_tensorrt(monkeypatch, JETPACK6, device)
    result = build_engine(tiny_imagenet_onnx, str(tmp_path / "m.engine"), BuildOptions(calib_cache=cache))
    assert result.precision == "int8-calib" and result.layer_precisions["int8"] == 2
    assert [c for c in trt.calls if c[0] == "build"][0][2] == ["INT8"]


@pytest.mark.parametrize("version", [JETPACK5, JETPACK6])
def test_runner_moves_data_like_onnxruntime(tiny_imagenet_onnx, tmp_path, device, monkeypatch, version):
    use_tensorrt(monkeypatch, version, device)
    engine = build_engine(tiny_imagenet_onnx, str(tmp_path / "m.engine"), BuildOptions(max_batch=4)).engine_path
    with TensorRTRunner(engine) as runner:
        assert runner.get_input_metadata()["input"].shape == (None, 3, 32, 32)
        assert runner.profile("input") == ((1, 3, 32, 32), (1, 3, 32, 32), (4, 3, 32, 32))
        for count in (1, 4, 2):
            batch = batch_of(tiny_imagenet_onnx, count)
            np.testing.assert_allclose(runner.infer({"input": batch})["logits"], reference(tiny_imagenet_onnx, batch),
                                       rtol=1e-5, atol=1e-6)
        assert device.mallocs == 4  # input and output, allocated at batch 1 and grown once for batch 4
        assert runner.compute_times == [0.00025] * 3 and len(runner.inference_times) == 3
        with pytest.raises(UserError, match="batch 5 is outside the engine's profile range 1~4"):
            runner.infer({"input": batch_of(tiny_imagenet_onnx, 5)})
    assert device.memory == {}  # everything freed on deactivate


def test_cuda_graph_capture_and_replay(tiny_imagenet_onnx, tmp_path, device, monkeypatch):
    use_tensorrt(monkeypatch, JETPACK6, device)
    engine = build_engine(tiny_imagenet_onnx, str(tmp_path / "m.engine"), BuildOptions(max_batch=4)).engine_path
    with TensorRTRunner(engine, use_cuda_graph=True) as runner:
        for count in (2, 2, 3, 3):  # same shape: replay; new shape: capture again
            batch = batch_of(tiny_imagenet_onnx, count)
            np.testing.assert_allclose(runner.infer({"input": batch})["logits"], reference(tiny_imagenet_onnx, batch),
                                       rtol=1e-5, atol=1e-6)
        assert device.launches == 4 and runner.describe()["cuda_graph"] is True


def test_stale_engine_is_refused_before_deserializing(tiny_imagenet_onnx, tmp_path, device, monkeypatch):
    use_tensorrt(monkeypatch, JETPACK6, device)
    engine = build_engine(tiny_imagenet_onnx, str(tmp_path / "m.engine")).engine_path
    trt = use_tensorrt(monkeypatch, "10.4.0", device)  # an upgraded JetPack
    with pytest.raises(UserError, match="built with TensorRT 10.3.0 but this is TensorRT 10.4.0"):
        TensorRTRunner(engine).activate()
    assert ("deserialize",) not in trt.calls
    os.remove(sidecar_path(engine))  # without a sidecar, TensorRT's own refusal is still one clear line
    with pytest.raises(UserError, match="cannot load .*Version tag does not match"):
        TensorRTRunner(engine).activate()


def test_infer_trt_builds_once_and_matches_onnxruntime(tiny_imagenet_onnx, tmp_path, device, monkeypatch, capsys):
    trt = use_tensorrt(monkeypatch, JETPACK6, device)

    def run(*extra):
        assert infer.main([tiny_imagenet_onnx, SAMPLES_DIR, "--json", "--top-k", "3"] + list(extra)) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return lines[:-1], lines[-1]["summary"]

    expected, _ = run()
    cache = str(tmp_path / "engines")
    results, summary = run("--trt", "--engine-cache", cache, "--batch", "4")
    assert summary["runner"]["backend"] == "tensorrt" and summary["compute"]["runs"] == 3
    assert [r["topk"] for r in results] == [r["topk"] for r in expected]
    (name,) = [n for n in os.listdir(cache) if n.endswith(".engine")]
    assert name.startswith("tiny_eca.onnx.") and name.endswith(".trt10.3.0.simulated-gpu-sm87.fp32.engine")
    builds = len([c for c in trt.calls if c[0] == "build"])
    run("--trt", "--engine-cache", cache, "--batch", "4")
    assert len([c for c in trt.calls if c[0] == "build"]) == builds  # reused from the cache
    run("--trt", "--engine-cache", cache, "--batch", "2")
    assert len([c for c in trt.calls if c[0] == "build"]) == builds + 1  # other profile: rebuilt
