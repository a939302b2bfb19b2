"""Plain-Python layers around TensorRT that need no TensorRT: profiles, ONNX precision, sidecar checks before an
engine loads, engine-cache names, layer-precision summaries and the missing-dependency messages."""
import json
import sys

import pytest

from deploy.errors import MissingDependencyError, UserError
from deploy.trt import compat as compat_module
from deploy.trt.cuda import DeviceInfo
from deploy.trt.engine_cache import cached_engine_usable, default_cache_dir, device_tag, engine_cache_name
from deploy.trt.inspect import summarize_layer_precisions
from deploy.onnx_info import inspect_onnx
from deploy.trt.plan import BuildOptions
from deploy.trt.profiles import BatchRange, check_input_shape, resolve_batch_range, resolve_profiles
from deploy.trt.sidecar import check_engine_compatible
from tests.deploy.trt_models import write_model
from tests.fake_tensorrt import fake_tensorrt

INT8_LAYERS = json.dumps({"Layers": [
    {"Inputs": [{"Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}]},
    {"Inputs": [{"Format/Datatype": "Row major linear FP16 format"}]},
    {"Inputs": [{"Format/Datatype": "Row major linear FP32"}]}, {"Name": "no formats"}]})


def test_batch_range_defaults_and_errors():
    assert resolve_batch_range() == BatchRange(1, 1, 8)
    assert resolve_batch_range(max_batch=32) == BatchRange(1, 1, 32)
    assert resolve_batch_range(min_batch=4, opt_batch=16) == BatchRange(4, 16, 16)
    for bad in ({"min_batch": 4, "max_batch": 2}, {"opt_batch": 9, "max_batch": 8}, {"min_batch": 0}):
        with pytest.raises(UserError):
            resolve_batch_range(**bad)


def test_profiles_of_an_exported_model(tiny_imagenet_onnx):
    info = inspect_onnx(tiny_imagenet_onnx)
    assert info.inputs == {"input": (None, 3, 32, 32)}
    assert (info.precision.fp16, info.precision.qdq, info.precision.source) == (False, False, "onnx graph")
    (profile,) = resolve_profiles(info.inputs, opt_batch=2, max_batch=4)
    assert (profile.min, profile.opt, profile.max) == ((1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32))
    assert profile.to_dict() == {"input": "input", "min": [1, 3, 32, 32], "opt": [2, 3, 32, 32], "max": [4, 3, 32, 32]}


def test_static_models_take_no_other_batch():
    assert resolve_profiles({"input": (4, 3, 32, 32)}) == []
    assert resolve_profiles({"input": (4, 3, 32, 32)}, max_batch=4) == []
    with pytest.raises(UserError, match="static batch of 4"):
        resolve_profiles({"input": (4, 3, 32, 32)}, max_batch=8)
    with pytest.raises(UserError, match="beyond the batch"):
        resolve_profiles({"input": (None, 3, None, None)})


def test_run_time_shape_errors_name_the_remedy():
    profile = ((1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32))
    check_input_shape("input", (-1, 3, 32, 32), (4, 3, 32, 32), profile)
    with pytest.raises(UserError) as info:
        check_input_shape("input", (-1, 3, 32, 32), (9, 3, 32, 32), profile)
    message = str(info.value)
    assert "batch 9 is outside the engine's profile range 1~4" in message and "--max-batch" in message
    assert "exceeds min~max range" in message
    with pytest.raises(UserError, match="static batch of 8"):
        check_input_shape("input", (8, 3, 32, 32), (1, 3, 32, 32))
    with pytest.raises(UserError, match="does not fit"):
        check_input_shape("input", (-1, 3, 32, 32), (1, 3, 64, 64), profile)
    with pytest.raises(UserError, match="dimensions"):
        check_input_shape("input", (-1, 3, 32, 32), (3, 32, 32), profile)


def test_precision_from_the_bundle_sidecar_without_onnx(tmp_path, monkeypatch):
    path = write_model(tmp_path / "m.onnx", "fp16")
    with open(path + ".json", "w") as handle:
        json.dump({"metadata": {}, "inputs": {"x": [None, 4]}, "precision": {"fp16": True, "qdq": False}}, handle)
    monkeypatch.setitem(sys.modules, "onnx", None)  # a Jetson without the onnx package
    info = inspect_onnx(path)
    assert info.precision.fp16 and info.inputs == {"x": (None, 4)} and "sidecar" in info.precision.source


ORIN = DeviceInfo("Orin", 8, 7)


def sidecar(version="10.3.0", device=("Orin", "8.7"), **extra):
    data = {"tensorrt_version": version, "device": {"name": device[0], "compute_capability": device[1]},
            "source_onnx": {"path": "/models/model.onnx", "sha256": "ab" * 32}}
    data.update(extra)
    return data


def test_matching_sidecar_loads_silently(tmp_path):
    assert check_engine_compatible(sidecar(), "10.3.0", ORIN, str(tmp_path / "m.engine")) == []
    assert check_engine_compatible(sidecar("10.3.0.30"), "10.3.0", ORIN, "m.engine") == []


def test_stale_version_is_refused_before_loading():
    with pytest.raises(UserError) as info:
        check_engine_compatible(sidecar("8.6.1"), "10.3.0", ORIN, "m.engine")
    message = str(info.value)
    assert "built with TensorRT 8.6.1 but this is TensorRT 10.3.0" in message
    assert "python3 -m deploy.build model.onnx -o m.engine" in message


def test_version_compatible_engines_say_so_or_fail_clearly():
    notes = check_engine_compatible(sidecar("10.3.0", version_compatible=True), "10.5.0", ORIN, "m.engine")
    assert "version-compatible" in notes[0]
    assert check_engine_compatible(sidecar("8.6.1", version_compatible=True), "10.3.0", ORIN, "m.engine")
    for built, running in (("10.3.0", "10.1.0"), ("8.6.1", "11.4.0")):
        with pytest.raises(UserError, match="version-compatible"):
            check_engine_compatible(sidecar(built, version_compatible=True), running, ORIN, "m.engine")


def test_other_gpu_is_refused_unless_hardware_compatible():
    with pytest.raises(UserError, match=r"built for Orin \(compute capability 8.7\) but this GPU is Xavier \(7.2\)"):
        check_engine_compatible(sidecar(), "10.3.0", DeviceInfo("Xavier", 7, 2), "m.engine")
    ampere = sidecar(device=("A100", "8.0"), hardware_compatibility_level="ampere_plus")
    assert "hardware-compatible" in check_engine_compatible(ampere, "10.3.0", DeviceInfo("L4", 8, 9), "m.engine")[0]
    turing = sidecar(device=("T4", "7.5"), hardware_compatibility_level="ampere_plus")
    with pytest.raises(UserError):
        check_engine_compatible(turing, "10.3.0", DeviceInfo("L4", 8, 9), "m.engine")
    same_cc = check_engine_compatible(sidecar(device=("RTX 3090", "8.6")), "10.3.0", DeviceInfo("A10", 8, 6), "x")
    assert "rebuild here for best speed" in same_cc[0]


def test_replaced_engine_is_detected_by_size(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x" * 10)
    with pytest.raises(UserError, match="replaced without its sidecar"):
        check_engine_compatible(sidecar(engine_size=11), "10.3.0", ORIN, str(engine))


def test_engine_cache_names_carry_model_version_device_precision():
    assert device_tag(ORIN) == "orin-sm87"
    assert device_tag(DeviceInfo("NVIDIA GeForce RTX 3090", 8, 6)) == "nvidia-geforce-rtx-3090-sm86"
    assert device_tag(ORIN, dla_core=1) == "dla1"
    name = engine_cache_name("/m/model.onnx", "0123456789abcdef" * 4, "10.3.0", "orin-sm87", "fp16")
    assert name == "model.onnx.0123456789ab.trt10.3.0.orin-sm87.fp16.engine"


def test_cached_engine_reuse_rules(tmp_path):
    engine = tmp_path / "model.onnx.x.engine"
    options = BuildOptions(max_batch=4)
    assert cached_engine_usable(str(engine), "aa", options) == (False, "not built yet")
    engine.write_bytes(b"plan")
    assert cached_engine_usable(str(engine), "aa", options)[1] == "it has no sidecar"
    (tmp_path / "model.onnx.x.engine.json").write_text(json.dumps(
        {"source_onnx": {"sha256": "aa"}, "build_options": options.to_dict()}))
    assert cached_engine_usable(str(engine), "aa", options) == (True, "cached")
    assert "another version of the model" in cached_engine_usable(str(engine), "bb", options)[1]
    assert "max_batch" in cached_engine_usable(str(engine), "aa", BuildOptions(max_batch=8))[1]


def test_default_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("ECA_DEPLOY_ENGINE_CACHE", raising=False)
    assert default_cache_dir(str(tmp_path / "m.onnx")) == str(tmp_path)
    monkeypatch.setenv("ECA_DEPLOY_ENGINE_CACHE", "/somewhere")
    assert default_cache_dir(str(tmp_path / "m.onnx")) == "/somewhere"


def test_layer_precision_summary():
    assert summarize_layer_precisions(INT8_LAYERS) == {"int8": 1, "fp16": 1, "fp32": 1, "unknown": 1}
    assert summarize_layer_precisions(json.dumps({"Layers": ["conv1", "fc"]}))["unknown"] == 2
    assert summarize_layer_precisions(None) == {"int8": 0, "fp16": 0, "fp32": 0, "unknown": 0}


def test_missing_tensorrt_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr("deploy.jetson.is_jetson", lambda *a, **k: False)
    with pytest.raises(MissingDependencyError) as info:
        compat_module.import_tensorrt()
    assert "pip install tensorrt" in str(info.value) and "JetPack" in str(info.value)
    monkeypatch.setattr("deploy.jetson.is_jetson", lambda *a, **k: True)
    with pytest.raises(MissingDependencyError, match="do not pip install it"):
        compat_module.import_tensorrt()


def test_too_old_tensorrt_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("8.4.3.1"))
    with pytest.raises(UserError, match="8.4.3.1 is too old"):
        compat_module.import_tensorrt()


def test_runner_without_tensorrt(monkeypatch, tmp_path):
    from deploy.runners import TensorRTRunner
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match="run TensorRT engines"):
        with TensorRTRunner(str(engine)):
            pass
    with pytest.raises(UserError, match="no such engine"):
        TensorRTRunner(str(tmp_path / "missing.engine")).activate()
