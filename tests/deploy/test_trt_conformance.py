"""No engine is planned that TensorRT's ONNX parser would refuse: Q/DQ INT8 with zero point 0, the documented
operator list and opset / IR range per release (deploy/data/trt_onnx_parsers.json), on real project models and on
tiny hand-made graphs; and the fake TensorRT of the build tests refuses the same models the real parser does."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploy.errors import CheckFailedError, UserError
from deploy.trt import plan as plan_module
from deploy.trt.build import build_engine
from deploy.trt.conformance import PARSERS_FILE, check_conformance, parser_release
from deploy.trt.plan import plan_build
from tests.deploy.int8_fixtures import digits_int8_models  # noqa: F401 (a fixture)
from tests.deploy.trt_models import write_model
from tests.fake_tensorrt import DESKTOP11, JETPACK5, JETPACK6, install

JP5, JP60, JP6, TRT11 = "8.5.2", "8.6.2", "10.3.0", "11.4.0"
VERSIONS = (JP5, JP60, JP6, TRT11)


def layer_norm_model(path) -> str:
    """A tiny graph around LayerNormalization: listed by the 8.6 parser (its changelog) and later, not by 8.5's."""
    inits = [numpy_helper.from_array(np.ones(4, np.float32), "scale"),
             numpy_helper.from_array(np.zeros(4, np.float32), "bias")]
    graph = helper.make_graph([helper.make_node("LayerNormalization", ["input", "scale", "bias"], ["logits"])],
                              "ln", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def with_versions(source, path, opset=None, ir_version=None) -> str:
    model = onnx.load(source)
    if opset is not None:
        model.opset_import[0].version = opset
    if ir_version is not None:
        model.ir_version = ir_version
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


@pytest.mark.parametrize("version", VERSIONS)
def test_cpu_target_model_is_refused_in_one_line_naming_the_fix(digits_int8_models, version):
    with pytest.raises(UserError) as info:
        check_conformance(digits_int8_models["cpu"], version)
    message = str(info.value)
    assert "\n" not in message and message.startswith("eca_digits.int8.cpu.onnx: TensorRT {} would refuse".format(
        version))
    assert "UINT8 zero points" in message and "non-zero zero points" in message
    assert "zeroPt must be all zeros" in message and "calibrate --target tensorrt" in message


@pytest.mark.parametrize("version", VERSIONS)
def test_tensorrt_target_model_is_planned_on_every_version(digits_int8_models, version):
    assert check_conformance(digits_int8_models["tensorrt"], version) is None
    plan = plan_build(digits_int8_models["tensorrt"], None, version)
    assert plan.precision == "int8" and plan.float_layers


def test_the_plan_names_int8_weights_where_the_release_documents_are_silent(digits_int8_models):
    """The TensorRT-target model keeps its weights as INT8 behind DequantizeLinear: 8.5's parser table and the 11.x
    Developer Guide document that; for 8.6 and 10.x no statement was found, and the plan says so."""
    for version, silent in ((JP5, False), (JP60, True), (JP6, True), (TRT11, False)):
        notes = plan_build(digits_int8_models["tensorrt"], None, version).notes
        assert any("INT8 initializers feeding DequantizeLinear" in note for note in notes) == silent, version


def test_dry_run_refuses_the_cpu_model_exit_2_one_line(digits_int8_models, capsys):
    from click.testing import CliRunner

    import cli
    from deploy.build import main

    assert main([digits_int8_models["cpu"], "--dry-run", "--trt-version", JP6]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "would refuse it" in err and "--target tensorrt" in err
    invoked = CliRunner().invoke(cli.cli, ["build", digits_int8_models["cpu"], "--dry-run"], prog_name="cli.py")
    assert invoked.exit_code == 2 and "would refuse it" in invoked.output
    assert main([digits_int8_models["tensorrt"], "--dry-run", "--trt-version", JP5]) == 0


def test_an_op_outside_a_release_list_is_refused_for_that_release_only(tmp_path):
    model = layer_norm_model(tmp_path / "ln.onnx")
    with pytest.raises(UserError, match=r"LayerNormalization is not in TensorRT 8\.5\.2's ONNX operator list"):
        plan_build(model, None, JP5)
    for version in (JP60, JP6, TRT11):
        assert plan_build(model, None, version).precision == "fp32"
    custom = onnx.load(model)
    custom.graph.node[0].domain = "com.microsoft"
    custom.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(custom, str(tmp_path / "custom.onnx"))
    with pytest.raises(UserError, match="com.microsoft:LayerNormalization is not in TensorRT 11.4.0's"):
        check_conformance(str(tmp_path / "custom.onnx"), TRT11)


def test_an_opset_or_ir_version_beyond_the_parser_is_refused(tmp_path):
    base = write_model(tmp_path / "m.onnx", "fp32")
    newer = with_versions(base, tmp_path / "opset21.onnx", opset=21)
    for version, limit in ((JP5, "up to opset 17"), (JP6, "opsets 9 to 20")):
        with pytest.raises(UserError) as info:
            plan_build(newer, None, version)
        assert "opset 21 is outside" in str(info.value) and limit in str(info.value)
        assert "eca-deploy export --opset 17" in str(info.value)
    assert plan_build(newer, None, TRT11).precision == "fp32"  # the 10.15 list, 9 to 24, stands in for 11.x
    ir10 = with_versions(base, tmp_path / "ir10.onnx", ir_version=10)
    with pytest.raises(UserError, match=r"IR version 10 is newer than TensorRT 10\.3\.0's parser reads \(IR 9"):
        plan_build(ir10, None, JP6)
    assert plan_build(ir10, None, "10.8.0").precision == "fp32"  # 10.6 moved its parser to ONNX 1.17 (IR 10)


def test_every_release_names_its_sources():
    with open(PARSERS_FILE) as handle:
        releases = json.load(handle)["releases"]
    assert [r["from"] for r in releases] == ["8.5", "8.6", "10.0", "10.6", "11.0"]
    for release in releases:
        assert set(release["sources"]) == {"operators", "opset", "ir"} and release["operators"]
        assert {"Conv", "QuantizeLinear", "DequantizeLinear", "GlobalAveragePool"} <= set(release["operators"])
    assert "6d0ab7be324d02c7feb3a306b6fdbeae84f71ddc" in releases[0]["sources"]["operators"]
    assert parser_release("10.3.0.30").first.release == (10, 0, 0)
    assert parser_release("8.6.2").opset_max == 17 and parser_release(TRT11).opset_max == 24


# -- the fake TensorRT refuses what the real parser refuses -------------------------------------------------------

@pytest.fixture()
def unchecked(monkeypatch):
    """Plans without the conformance check, so the models reach the (fake) parser itself."""
    monkeypatch.setattr(plan_module, "check_conformance", lambda path, version: None)
    from deploy.trt import build as build_module
    monkeypatch.setattr(build_module, "_device", lambda notes: None)


@pytest.mark.parametrize("version", [JETPACK5, JETPACK6, DESKTOP11])
def test_the_fake_parser_refuses_the_cpu_model(digits_int8_models, unchecked, monkeypatch, tmp_path, version):
    trt = install(monkeypatch, version)
    with pytest.raises(CheckFailedError, match="could not build"):
        build_engine(digits_int8_models["cpu"], str(tmp_path / "cpu.int8.engine"))
    assert any("zeroPt must be all zeros" in error for error in trt.parser_errors)
    assert any("Unsupported ONNX data type: UINT8" in error for error in trt.parser_errors)
    result = build_engine(digits_int8_models["tensorrt"], str(tmp_path / "trt.int8.engine"))
    assert trt.parser_errors == [] and result.precision == "int8"


def test_the_fake_parser_refuses_an_unlisted_op(unchecked, monkeypatch, tmp_path):
    model = layer_norm_model(tmp_path / "ln.onnx")
    trt = install(monkeypatch, JETPACK5)
    with pytest.raises(CheckFailedError):
        build_engine(model, str(tmp_path / "ln.fp32.engine"))
    assert trt.parser_errors == ["In node 0 with name:  and operator: LayerNormalization: No importer registered "
                                 "for op: LayerNormalization"]
