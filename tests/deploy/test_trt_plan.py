"""The build plan without TensorRT: honest precisions and flags per TensorRT version, names, command lines."""
import os

import pytest

from deploy.errors import UserError
from deploy.trt.build import dry_run
from deploy.trt.plan import BuildOptions, build_rules_table, default_engine_path, plan_build, qdq_float_layers
from deploy.trt.version import DEFAULT_TARGET, TrtVersion, parse_version_or_number
from tests.deploy.int8_fixtures import digits_int8_models  # noqa: F401 (a fixture)
from tests.deploy.trt_models import write_model

JP5, JP60, JP6, TRT11 = "8.5.2", "8.6.2", "10.3.0", "11.4.0"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plan")
    return {p: write_model(folder / "m_{}.onnx".format(p), p) for p in ("fp32", "fp16", "int8")}


def plan(models, model, version, **options):
    return plan_build(models[model], None, version, BuildOptions(**options))


# (model, --precision, version) -> (precision, trt_flags): the table the README states, with its sources.
@pytest.mark.parametrize("model,precision,version,expected,flags", [
    ("fp32", None, JP5, "fp32", []),
    ("fp32", None, JP60, "fp32", []),
    ("fp32", None, JP6, "fp32", ["STRONGLY_TYPED"]),
    ("fp32", None, TRT11, "fp32", ["STRONGLY_TYPED"]),
    ("fp32", "fp16", JP5, "fp16", ["FP16"]),
    ("fp32", "fp16", JP6, "fp16", ["FP16"]),
    ("fp16", None, JP5, "fp16", ["FP16"]),
    ("fp16", None, JP6, "fp16", ["STRONGLY_TYPED"]),
    ("fp16", None, TRT11, "fp16", ["STRONGLY_TYPED"]),
    ("int8", None, JP5, "int8", ["INT8"]),  # float layers stay FP32, as measured (qdq_float_layers)
    ("int8", None, JP6, "int8", ["STRONGLY_TYPED"]),
    ("int8", None, TRT11, "int8", ["STRONGLY_TYPED"]),
])
def test_precision_and_flags_per_version(models, model, precision, version, expected, flags):
    result = plan(models, model, version, precision=precision)
    assert (result.precision, result.trt_flags) == (expected, flags)
    assert result.engine.endswith(".{}.engine".format(expected)) or result.engine.endswith("m_{}.engine".format(
        expected))
    assert "INT8" not in result.trt_flags or expected.startswith("int8")  # fp16 is never INT8


def test_implicit_int8_only_on_request_and_only_before_11(models, tmp_path):
    cache = tmp_path / "m.cache"
    cache.write_text("TRT-8502-EntropyCalibration2\ninput: 3c010204\n")
    result = plan(models, "fp32", JP5, implicit_int8=True, calib_cache=str(cache))
    assert (result.precision, result.trt_flags) == ("int8-implicit", ["INT8"])
    assert result.engine.endswith("m_fp32.int8-implicit.engine")
    assert "--int8" in result.to_dict()["trtexec"] and "--calib=" in result.to_dict()["trtexec"]
    with pytest.raises(UserError, match=r"written for TensorRT 8\.5\.2 .* TRT-100300-"):  # checked in the plan
        plan(models, "fp32", JP6, implicit_int8=True, calib_cache=str(cache))
    cache.write_text("TRT-100300-EntropyCalibration2\ninput: 3c010204\n")
    assert "deprecated since TensorRT 10.1" in plan(models, "fp32", JP6, implicit_int8=True,
                                                    calib_cache=str(cache)).notes[0]
    with pytest.raises(UserError, match="removed in TensorRT 11.0"):
        plan(models, "fp32", TRT11, implicit_int8=True, calib_cache=str(cache))
    with pytest.raises(UserError, match="--calib-cache is only for --implicit-int8"):
        plan(models, "fp32", JP5, calib_cache=str(cache))
    with pytest.raises(UserError, match="--implicit-int8 needs --calib-cache"):
        plan(models, "fp32", JP5, implicit_int8=True)


@pytest.mark.parametrize("model,options,version,message", [
    ("fp32", {"precision": "int8"}, JP6, "int8 engines are built from the Q/DQ ONNX model"),
    ("fp32", {"precision": "fp16"}, TRT11, "no FP16 builder flag (removed in 11.0)"),
    ("fp16", {"precision": "fp32"}, JP6, "the model is FP16"),
    ("int8", {"precision": "fp16"}, JP6, "builds as int8 only"),
    ("fp32", {"opt_level": 3}, JP5, "--opt-level needs TensorRT 8.6 or newer"),
    ("fp32", {"version_compatible": True}, JP5, "--version-compatible needs TensorRT 8.6"),
    ("fp16", {"dla_core": 0}, TRT11, "DLA (--dla-core) is a JetPack feature"),
    ("fp32", {"dla_core": 0}, JP6, "DLA runs FP16 and INT8 layers only"),
    ("fp32", {}, "8.4.3", "needs 8.5 or newer"),
])
def test_what_a_version_cannot_build_fails_in_one_line(models, model, options, version, message):
    with pytest.raises(UserError) as info:
        plan(models, model, version, **options)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_engine_names_say_the_precision(models, tmp_path):
    assert default_engine_path("a/m.onnx", "fp16") == "a/m.fp16.engine"
    assert default_engine_path("a/m.fp16.onnx", "fp16") == "a/m.fp16.engine"
    assert plan_build(models["fp16"], str(tmp_path / "x.fp16.engine"), JP6).engine.endswith("x.fp16.engine")
    with pytest.raises(UserError, match="named fp16 but the engine will be int8"):
        plan_build(models["int8"], str(tmp_path / "resnet_fp16.engine"), JP6)


def test_command_lines_match_the_flags(models, tmp_path):
    timing = str(tmp_path / "t.cache")
    result = plan(models, "fp32", JP5, precision="fp16", max_batch=4, workspace_mib=256, timing_cache=timing,
                  dla_core=1, gpu_fallback=True).to_dict()
    assert result["trtexec"].split()[3:] == [
        "--noTF32", "--fp16", "--minShapes=input:1x3x8x8", "--optShapes=input:1x3x8x8", "--maxShapes=input:4x3x8x8",
        "--memPoolSize=workspace:256", "--timingCacheFile=" + timing, "--useDLACore=1", "--allowGPUFallback"]
    assert result["polygraphy"].split()[7:] == [
        "--fp16", "--trt-min-shapes", "'input:[1,3,8,8]'", "--trt-opt-shapes", "'input:[1,3,8,8]'",
        "--trt-max-shapes", "'input:[4,3,8,8]'", "--pool-limit", "workspace:256M", "--load-timing-cache", timing,
        "--save-timing-cache", timing, "--use-dla", "--allow-gpu-fallback"]
    assert result["polygraphy_run"].startswith("polygraphy run {} --trt --fp16".format(models["fp32"]))
    assert "--onnxrt --atol 1e-2 --rtol 1e-2" in result["polygraphy_run"]
    strong = plan(models, "fp16", JP6, opt_level=4, hardware_compatible=True, version_compatible=True).to_dict()
    assert "--stronglyTyped" in strong["trtexec"] and "--fp16" not in strong["trtexec"]
    assert strong["trt_flags"] == ["STRONGLY_TYPED", "VERSION_COMPATIBLE"]
    for flag in ("--builderOptimizationLevel=4", "--hardwareCompatibilityLevel=ampere+", "--versionCompatible"):
        assert flag in strong["trtexec"]
    assert "--stronglyTyped" not in plan(models, "fp16", TRT11).to_dict()["trtexec"]  # always strong on 11


def test_dry_run_defaults_to_jetpack_61_when_tensorrt_is_missing(models, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    result = dry_run(models["fp16"])
    assert result.trt_version == DEFAULT_TARGET == "10.3.0" and "TensorRT is not installed here" in result.notes[-1]
    assert set(result.to_dict()) >= {"onnx", "engine", "precision", "trt_flags", "trt_version", "trtexec"}


def test_version_codec():
    assert TrtVersion.parse("10.3.0.30").same_release(TrtVersion.parse("10.3.0"))
    assert TrtVersion.parse("8.6.1").cache_number == 8601 and TrtVersion.parse("10.3.0").cache_number == 100300
    assert str(TrtVersion.from_cache_number(100300)) == "10.3.0" and str(TrtVersion.from_cache_number(8502)) == "8.5.2"
    assert parse_version_or_number("8601") == TrtVersion(8, 6, 1)
    assert parse_version_or_number("8.6").release == (8, 6, 0)
    with pytest.raises(UserError, match="bad TensorRT version"):
        TrtVersion.parse("ten")
    assert [TrtVersion.parse(v).has_weak_typing for v in (JP5, JP6, TRT11)] == [True, True, False]
    assert [TrtVersion.parse(v).has_strongly_typed_flag for v in (JP5, JP6, TRT11)] == [False, True, False]


# -- one statement per version of how a Q/DQ model's float layers run ----------------------------------------------

def test_float_layers_statement_is_one_per_version_and_the_same_in_dry_run_and_build_engines_sh(
        digits_int8_models, tmp_path, capsys):
    from deploy.build import main
    from bundling.bundle import TARGETS, bundle

    statements = {version: qdq_float_layers(version) for version in (JP5, JP60, JP6, TRT11)}
    assert statements[JP5] == statements[JP60] and len({statements[v] for v in (JP5, JP6, TRT11)}) == 3
    assert "FP32" in statements[JP5] and "strongly typed" in statements[JP6] and "11.x" in statements[TRT11]
    assert qdq_float_layers("10.3.0.30") == qdq_float_layers("10.8.0") == statements[JP6]
    script = open(bundle([digits_int8_models["tensorrt"]], tmp_path / "b").output + "/build_engines.sh").read()
    for target, version in TARGETS:
        lines = script.splitlines()
        planned = lines.index("# {}: int8 [{}]".format(target, " ".join(plan_build(
            digits_int8_models["tensorrt"], None, version).trt_flags)))
        assert lines[planned + 1] == "#   float layers: " + qdq_float_layers(version)
        assert main([digits_int8_models["tensorrt"], "--dry-run", "--trt-version", version]) == 0
        assert "  float layers: " + qdq_float_layers(version) in capsys.readouterr().out.splitlines()


def test_the_cpu_target_model_is_bundled_but_gets_no_build_line(digits_int8_models, tmp_path):
    from bundling.bundle import bundle

    result = bundle([digits_int8_models["tensorrt"], digits_int8_models["cpu"]], tmp_path / "b")
    assert "eca_digits.int8.cpu.onnx" in result.models and "eca_digits.int8.cpu.onnx" in result.files
    assert len(result.build_commands) == 1 and result.build_commands[0].startswith(
        "python3 -m deploy.build eca_digits.int8.tensorrt.onnx -o eca_digits.int8.tensorrt.engine")
    script = open(result.output + "/build_engines.sh").read().splitlines()
    commands = [line for line in script if line.startswith("python3 -m deploy.build")]
    assert commands == result.build_commands  # every line the device runs is one TensorRT accepts
    note = next(n for n in result.notes if n.startswith("eca_digits.int8.cpu.onnx: no TensorRT engine"))
    assert "it runs with ONNX Runtime" in note and "--target tensorrt" in note and "# " + note in script


def test_the_docs_table_is_the_plans_own(models):
    table = build_rules_table()
    docs = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "TENSORRT_CONFORMANCE.md")
    assert table in open(docs, encoding="utf-8").read()
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines()[2:]}
    assert qdq_float_layers(JP5) in rows["Q/DQ ONNX → `int8`"] and qdq_float_layers(TRT11) in rows[
        "Q/DQ ONNX → `int8`"]
    assert plan(models, "fp16", JP6).float_layers is None and plan(models, "int8", JP6).float_layers == \
        qdq_float_layers(JP6)


def test_dla_is_the_one_exception_and_says_so(models):
    """DLA runs INT8 and FP16 layers only, so a Q/DQ model's float layers need the FP16 flag there."""
    for version in (JP5, JP6):
        result = plan(models, "int8", version, dla_core=0, gpu_fallback=True)
        assert result.trt_flags == ["FP16", "INT8", "GPU_FALLBACK"] and not result.strongly_typed
        assert result.float_layers == qdq_float_layers(version, dla=True) and "FP16" in result.float_layers
        assert "--int8" in result.to_dict()["trtexec"] and "--fp16" in result.to_dict()["trtexec"]
