"""Logic tests of the TensorRT layer. They do NOT run TensorRT.

They check the plain-Python decisions around it: version dispatch (against fake ``tensorrt`` module objects that
have or lack the attributes each real version has), build plans, trtexec lines, optimization profiles, sidecar
compatibility checks, engine cache names and the calibration cache header check. The tests that run TensorRT are
in test_tensorrt_engine.py and skip where it is absent.
"""
import enum
import io
import json
import os
import sys
import types

import pytest

from deploy.errors import CheckFailedError, MissingDependencyError, UserError
from deploy.trt import compat as compat_module
from deploy.trt.build import BuildOptions, BuildPlan, _check_precision, plan_build, trtexec_command
from deploy.trt.compat import (TrtCompat, TrtVersion, calibration_version_int, describe_calibration_version,
                               feature_available, make_logger)
from deploy.trt.cuda import DeviceInfo
from deploy.trt.engine_cache import cached_engine_usable, default_cache_dir, device_tag, engine_cache_name
from deploy.trt.inspect import summarize_layer_precisions
from deploy.trt.onnx_info import OnnxPrecision, inspect_onnx
from deploy.trt.profiles import BatchRange, ShapeProfile, check_input_shape, resolve_batch_range, resolve_profiles
from deploy.trt.sidecar import check_engine_compatible
from tests.fake_tensorrt import DESKTOP11, JETPACK5, JETPACK6, fake_tensorrt, tiny_matmul_onnx

FP32 = OnnxPrecision(source="onnx graph")
FP16 = OnnxPrecision(fp16=True, source="onnx graph")
QDQ = OnnxPrecision(qdq=True, source="onnx graph")




def compat_for(version, **kwargs):
    return TrtCompat(fake_tensorrt(version, **kwargs))


# -- versions and features ---------------------------------------------------------------------------------------

def test_version_parsing_and_release_matching():
    assert TrtVersion.parse("8.5.2.2") == TrtVersion(8, 5, 2, 2)
    assert TrtVersion.parse("10.3.0").release == (10, 3, 0)
    assert TrtVersion.parse("11.4.0.post1").release == (11, 4, 0)
    assert TrtVersion.parse("10.3.0").same_release(TrtVersion.parse("10.3.0.30"))
    assert not TrtVersion.parse("10.3.0").same_release(TrtVersion.parse("10.4.0"))
    with pytest.raises(UserError):
        TrtVersion.parse("unknown")


def test_calibration_header_numbers_match_the_calib_cache_module():
    from deploy.calib_cache import parse_trt_version
    for version, number in (("8.5.2", 8502), ("8.6.1", 8601), ("10.3.0", 100300), ("11.4.0", 110400)):
        assert calibration_version_int(TrtVersion.parse(version)) == number == parse_trt_version(version)
        assert describe_calibration_version(number) == version


@pytest.mark.parametrize("feature,jp5,jp6,desktop11", [
    ("version_compatible", False, True, True),
    ("hardware_compatible", False, True, True),
    ("opt_level", False, True, True),
    ("strongly_typed", False, True, True),
    ("explicit_batch_flag", True, False, False),
    ("weak_precision_flags", True, True, False),
    ("implicit_int8", True, True, False),
    ("dla", True, True, False),
])
def test_feature_dispatch_by_version(feature, jp5, jp6, desktop11):
    for version, expected in ((JETPACK5, jp5), (JETPACK6, jp6), (DESKTOP11, desktop11)):
        assert compat_for(version).has(feature) is expected, (feature, version)
        assert TrtCompat.for_version(version).has(feature) is expected  # planning without TensorRT agrees


def test_missing_option_names_the_minimum_version_in_one_line():
    with pytest.raises(UserError) as info:
        compat_for(JETPACK5).require("version_compatible")
    assert str(info.value) == "--version-compatible needs TensorRT 8.6 or newer; this is TensorRT 8.5.2.2"
    with pytest.raises(UserError) as info:
        compat_for(DESKTOP11).require("implicit_int8")
    assert "removed in TensorRT 11.0" in str(info.value) and "Q/DQ" in str(info.value)
    assert "\n" not in str(info.value)


def test_attribute_probe_catches_a_build_without_the_feature():
    compat = compat_for(JETPACK6, drop=("HardwareCompatibilityLevel",))
    assert not compat.has("hardware_compatible")
    with pytest.raises(UserError, match="missing from this TensorRT 10.3.0 build"):
        compat.require("hardware_compatible")
    assert feature_available("hardware_compatible", TrtVersion.parse(JETPACK6))  # by version alone it exists


def test_network_flags_per_version():
    assert compat_for(JETPACK5).network_flags(strongly_typed=False) == 1 << 0  # EXPLICIT_BATCH
    trt10 = fake_tensorrt(JETPACK6)
    assert TrtCompat(trt10).network_flags(True) == 1 << int(trt10.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert TrtCompat(trt10).network_flags(False) == 0  # EXPLICIT_BATCH exists but is ignored from 10.0
    trt11 = fake_tensorrt(DESKTOP11, drop=("NetworkDefinitionCreationFlag",))
    trt11.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", ["OTHER"], start=0)
    assert TrtCompat(trt11).network_flags(True) == 0  # 11.x: strongly typed whether or not the flag exists
    with pytest.raises(UserError):
        compat_for(JETPACK5).network_flags(True)


def test_parser_issues_name_the_node_on_every_version():
    class Error8:
        def desc(self):
            return "No importer registered for op: Foo"

        def node(self):
            return 3

    class Error10(Error8):
        def node_name(self):
            return "/layer1/Foo"

        def node_operator(self):
            return "Foo"

    for error, expected in ((Error8(), "node #3: No importer"), (Error10(), "node '/layer1/Foo' (Foo): No importer")):
        parser = types.SimpleNamespace(num_errors=1, get_error=lambda index, e=error: e)
        assert str(compat_for(JETPACK6).parser_issues(parser)[0]).startswith(expected)


def test_profile_shape_dispatch():
    shapes = ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))
    engine10 = types.SimpleNamespace(get_tensor_profile_shape=lambda name, index: shapes)
    engine8 = types.SimpleNamespace(get_profile_shape=lambda index, name: shapes)
    for version, engine in ((JETPACK6, engine10), (JETPACK5, engine8)):
        assert compat_for(version).profile_shape(engine, "input", 0) == shapes


# -- build plans -------------------------------------------------------------------------------------------------

def plan(version, precision=FP32, **options):
    return plan_build(compat_for(version), BuildOptions(**options), precision)


def test_jetpack5_sets_the_flags_the_model_needs():
    assert plan(JETPACK5, FP32).builder_flags == []
    assert plan(JETPACK5, FP16).builder_flags == ["FP16"]
    assert plan(JETPACK5, QDQ).builder_flags == ["INT8"]
    both = plan(JETPACK5, OnnxPrecision(fp16=True, qdq=True, source="onnx graph"))
    assert both.builder_flags == ["FP16", "INT8"] and both.precision == "int8"
    assert plan(JETPACK5).network_flags == ["EXPLICIT_BATCH"] and not plan(JETPACK5).strongly_typed


@pytest.mark.parametrize("version", [JETPACK6, DESKTOP11])
def test_10_and_11_build_strongly_typed_without_precision_flags(version):
    for precision, label in ((FP32, "fp32"), (FP16, "fp16"), (QDQ, "int8")):
        result = plan(version, precision)
        assert result.strongly_typed and result.builder_flags == [] and result.precision == label
        assert result.network_flags == ["STRONGLY_TYPED"]
    assert any("FP16 ONNX" in note for note in plan(version, FP32).notes)


def test_calibration_cache_plans(tmp_path):
    cache = str(tmp_path / "model.cache")
    open(cache, "w").write("TRT-100300-EntropyCalibration2\n")
    jp6 = plan(JETPACK6, FP32, calib_cache=cache)
    assert (jp6.strongly_typed, jp6.builder_flags, jp6.precision, jp6.cache_tag) == (False, ["INT8"], "int8-calib",
                                                                                     "int8c")
    assert any("deprecated" in note for note in jp6.notes)
    assert plan(JETPACK5, FP16, calib_cache=cache).builder_flags == ["FP16", "INT8"]
    with pytest.raises(UserError, match="removed in TensorRT 11.0"):
        plan(DESKTOP11, FP32, calib_cache=cache)
    with pytest.raises(UserError, match="already has Q/DQ"):
        plan(JETPACK6, QDQ, calib_cache=cache)


@pytest.mark.parametrize("option,value", [("version_compatible", True), ("hardware_compatible", True),
                                          ("opt_level", 3)])
def test_options_of_8_6_fail_on_jetpack5(option, value):
    with pytest.raises(UserError, match=r"needs TensorRT 8\.6 or newer; this is TensorRT 8\.5\.2\.2"):
        plan(JETPACK5, FP16, **{option: value})
    assert plan(JETPACK6, FP16, **{option: value})


def test_dla_plans():
    assert plan(JETPACK5, FP16, dla_core=0, gpu_fallback=True).builder_flags == ["FP16", "GPU_FALLBACK"]
    with pytest.raises(UserError, match="DLA runs FP16 and INT8"):
        plan(JETPACK6, FP32, dla_core=0)
    with pytest.raises(UserError, match="DLA"):
        plan(DESKTOP11, FP16, dla_core=0)


def test_build_options_validate_without_tensorrt():
    with pytest.raises(UserError, match="--gpu-fallback only applies"):
        BuildOptions(gpu_fallback=True).validate()
    with pytest.raises(UserError, match="between 0 and 5"):
        BuildOptions(opt_level=7).validate()
    with pytest.raises(UserError, match="--min-batch"):
        BuildOptions(min_batch=8, max_batch=2).validate()
    assert BuildOptions.from_mapping({"max_batch": 4, "json": True, "output": "x"}).max_batch == 4


def test_trtexec_lines_follow_each_version():
    profile = [ShapeProfile("input", (1, 3, 32, 32), (2, 3, 32, 32), (8, 3, 32, 32))]
    line5 = trtexec_command("m.onnx", "m.engine", plan(JETPACK5, FP16, workspace_mib=512, timing_cache="t.cache",
                                                       dla_core=0, gpu_fallback=True), profile)
    assert line5.split() == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", "--fp16", "--allowGPUFallback",
                             "--minShapes=input:1x3x32x32", "--optShapes=input:2x3x32x32",
                             "--maxShapes=input:8x3x32x32", "--memPoolSize=workspace:512",
                             "--timingCacheFile=t.cache", "--useDLACore=0"]
    line10 = trtexec_command("m.onnx", "m.engine", plan(JETPACK6, FP16, opt_level=5, hardware_compatible=True,
                                                        version_compatible=True), [])
    assert "--stronglyTyped" in line10 and "--fp16" not in line10 and "--versionCompatible" in line10
    assert "--builderOptimizationLevel=5" in line10 and "--hardwareCompatibilityLevel=ampere+" in line10
    line11 = trtexec_command("m.onnx", "m.engine", plan(DESKTOP11, QDQ), [])
    assert "--stronglyTyped" not in line11 and "--int8" not in line11  # both flags are gone in 11
    line_q = trtexec_command("a b.onnx", "m.engine", plan(JETPACK5, QDQ), [])
    assert "'--onnx=a b.onnx'" in line_q and "--int8" in line_q


# -- profiles ----------------------------------------------------------------------------------------------------

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
    assert ShapeProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile


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


# -- ONNX precision detection ------------------------------------------------------------------------------------

def test_precision_detection_from_the_graph(tmp_path):
    fp16 = inspect_onnx(tiny_matmul_onnx(str(tmp_path / "fp16.onnx"), fp16=True)).precision
    qdq = inspect_onnx(tiny_matmul_onnx(str(tmp_path / "qdq.onnx"), qdq=True)).precision
    fp32 = inspect_onnx(tiny_matmul_onnx(str(tmp_path / "fp32.onnx"))).precision
    assert (fp16.fp16, fp16.qdq, fp16.label) == (True, False, "fp16")
    assert (qdq.fp16, qdq.qdq, qdq.label) == (False, True, "int8")
    assert fp32.label == "fp32"


def test_precision_from_the_bundle_sidecar_without_onnx(tmp_path, monkeypatch):
    path = tiny_matmul_onnx(str(tmp_path / "m.onnx"), fp16=True)
    with open(path + ".json", "w") as handle:
        json.dump({"metadata": {}, "inputs": {"x": [None, 4]}, "precision": {"fp16": True, "qdq": False}}, handle)
    monkeypatch.setitem(sys.modules, "onnx", None)  # a Jetson without the onnx package
    info = inspect_onnx(path)
    assert info.precision.fp16 and info.inputs == {"x": (None, 4)} and "sidecar" in info.precision.source


# -- sidecars ----------------------------------------------------------------------------------------------------

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


# -- engine cache ------------------------------------------------------------------------------------------------

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


# -- calibration cache checks ------------------------------------------------------------------------------------

def _cache(tmp_path, version, algorithm="EntropyCalibration2", names=("input", "conv1_out")):
    from deploy.calib_cache import write_calibration_cache
    return write_calibration_cache(str(tmp_path / "c.cache"), {n: 0.05 for n in names}, version, algorithm)


def test_cache_header_must_name_the_running_version(tmp_path):
    from deploy.trt.calibrator import check_calibration_cache
    check = check_calibration_cache(_cache(tmp_path, "8.6.1"), TrtVersion.parse("8.6.1"))
    assert (check.header_version, check.algorithm, check.tensor_names) == (8601, "EntropyCalibration2",
                                                                           ("input", "conv1_out"))
    assert check_calibration_cache(_cache(tmp_path, "10.3.0"), TrtVersion.parse("10.3.0")).header_version == 100300
    with pytest.raises(UserError) as info:
        check_calibration_cache(_cache(tmp_path, "8.6.1"), TrtVersion.parse("8.5.2.2"))
    message = str(info.value)
    assert "written for TensorRT 8.6.1 (header TRT-8601-EntropyCalibration2)" in message
    assert "expects TRT-8502" in message and "default quantization params" in message
    with pytest.raises(UserError, match="LegacyCalibration"):
        check_calibration_cache(_cache(tmp_path, "8.5.2", "LegacyCalibration"), TrtVersion.parse("8.5.2"))


def test_cache_must_name_network_tensors(tmp_path):
    from deploy.trt.calibrator import check_cache_covers_network, check_calibration_cache
    check = check_calibration_cache(_cache(tmp_path, "8.5.2"), TrtVersion.parse("8.5.2"))
    assert check_cache_covers_network(check, ["input", "conv1_out", "fc_out"]) == []
    assert "1 of 2" in check_cache_covers_network(check, ["input", "other"])[0]
    with pytest.raises(UserError, match="names none of this network's tensors"):
        check_cache_covers_network(check, ["a", "b"])


def test_replay_calibrator_reports_rejection(tmp_path):
    from deploy.trt.calibrator import check_calibration_cache, make_cache_calibrator
    check = check_calibration_cache(_cache(tmp_path, "8.5.2"), TrtVersion.parse("8.5.2"))
    calibrator = make_cache_calibrator(fake_tensorrt(JETPACK5), check)
    assert calibrator.read_calibration_cache() == check.data and calibrator.batches_requested == 0
    assert calibrator.get_batch(["input"]) is None and calibrator.batches_requested == 1


# -- checks after a build ----------------------------------------------------------------------------------------

INT8_LAYERS = json.dumps({"Layers": [
    {"Name": "conv1", "Inputs": [{"Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}]},
    {"Name": "fc", "Inputs": [{"Format/Datatype": "Row major linear FP16 format"}]},
    {"Name": "out", "Inputs": [{"Format/Datatype": "Row major linear FP32"}]},
    {"Name": "shape", "Inputs": [{"Format/Datatype": "N/A due to dynamic shapes"}]}]})


def test_layer_precision_summary():
    assert summarize_layer_precisions(INT8_LAYERS) == {"int8": 1, "fp16": 1, "fp32": 1, "unknown": 1}
    assert summarize_layer_precisions(json.dumps({"Layers": ["conv1", "fc"]}))["unknown"] == 2
    assert summarize_layer_precisions(None) == {"int8": 0, "fp16": 0, "fp32": 0, "unknown": 0}


def _plan(precision, calib=None):
    return BuildPlan("8.5.2", precision, False, [], [], BuildOptions(calib_cache=calib))


def test_lost_int8_scales_fail_the_build():
    logger = types.SimpleNamespace(missing_scales=[])
    no_int8 = summarize_layer_precisions(json.dumps({"Layers": [
        {"Inputs": [{"Format/Datatype": "Row major linear FP32"}]}]}))
    with pytest.raises(CheckFailedError, match="asked for calibration data"):
        _check_precision(_plan("int8-calib", "c.cache"), {}, types.SimpleNamespace(batches_requested=2), logger, [])
    with pytest.raises(CheckFailedError, match="default quantization params"):
        _check_precision(_plan("int8-calib", "c.cache"), {}, types.SimpleNamespace(batches_requested=0),
                         types.SimpleNamespace(missing_scales=["Setting a default quantization params for x"]), [])
    with pytest.raises(CheckFailedError, match="no INT8 layers"):
        _check_precision(_plan("int8"), no_int8, None, logger, [])
    notes = []
    _check_precision(_plan("int8"), summarize_layer_precisions(INT8_LAYERS), None, logger, notes)
    assert notes == []
    _check_precision(_plan("int8"), summarize_layer_precisions(None), None, logger, notes)
    assert "unchecked" in notes[0]


def test_logger_keeps_errors_and_missing_scale_lines():
    trt, stream = fake_tensorrt(JETPACK6), io.StringIO()
    logger = make_logger(trt, stream=stream)
    logger.log(trt.ILogger.Severity.ERROR, "Serialization assertion: Version tag does not match")
    logger.log(trt.ILogger.Severity.VERBOSE, "Setting a default quantization params because quantization data is "
                                             "missing for conv1")
    logger.log(trt.ILogger.Severity.INFO, "chatty")
    assert logger.errors == ["Serialization assertion: Version tag does not match"]
    assert len(logger.missing_scales) == 1
    assert stream.getvalue() == "[TensorRT] Serialization assertion: Version tag does not match\n"


# -- missing dependencies ----------------------------------------------------------------------------------------

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


def test_missing_cuda_bindings_are_one_clear_error(monkeypatch):
    from deploy.trt import cuda
    for name in ("cuda", "cuda.bindings", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(cuda, "cudart_candidates", lambda: [])
    monkeypatch.delenv(cuda.BACKEND_ENV, raising=False)
    with pytest.raises(MissingDependencyError) as info:
        cuda.load_cuda_backend()
    assert "cuda-python" in str(info.value) and "libcudart.so" in str(info.value)
    with pytest.raises(UserError, match="unknown CUDA binding"):
        cuda.load_cuda_backend("bogus")


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
    assert os.path.exists(str(engine))


def test_ctypes_backend_against_the_installed_libcudart():
    """Real libcudart.so when one is installed (the CUDA toolkit here has no GPU behind it): symbols and errors."""
    from deploy.trt import cuda
    try:
        backend = cuda.CtypesCudartBackend()
    except OSError as exc:
        pytest.skip("no libcudart.so on this machine ({})".format(exc))
    assert backend.supports_graphs  # every CUDA >= 11.4 runtime exports the graph calls
    try:
        info = backend.device_info()
    except cuda.CudaError as exc:  # no GPU or driver: one readable line, not a ctypes crash
        assert str(exc).startswith("CUDA cudaGetDevice failed: ") and "\n" not in str(exc)
    else:
        assert info.major >= 5 and info.name
