"""Graphs that are not N x 3 x H x W float32 classifiers, behind metadata copied from a real export: refused by
the one model check (deploy.metadata.read_model_info) in every command, in one line with exit 2."""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploy import build as deploy_build
from deploy.infer import main as infer_main
from tests.faults.conftest import assert_user_error, listing, one_error_line, run_cli

CLASSES = 1000  # the suite's tiny model, whose metadata is copied


def _graph(input_type, input_shape, nodes):
    weight = numpy_helper.from_array(np.ones((3, CLASSES), np.float32), "w")
    graph = helper.make_graph(nodes + [helper.make_node("MatMul", ["features", "w"], ["logits"])], "not_a_classifier",
                              [helper.make_tensor_value_info("input", input_type, input_shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _pooled(source="input"):
    return [helper.make_node("GlobalAveragePool", [source], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["features"])]


BAD_INPUTS = {
    "rank 3": (lambda: _graph(TensorProto.FLOAT, ["N", 3, 32], [
        helper.make_node("ReduceMean", ["input"], ["features"], axes=[2], keepdims=0)]), "rank 3"),
    "int64": (lambda: _graph(TensorProto.INT64, ["N", 3, 32, 32], [
        helper.make_node("Cast", ["input"], ["floats"], to=TensorProto.FLOAT)] + _pooled("floats")), "int64"),
    "dynamic height and width": (lambda: _graph(TensorProto.FLOAT, ["N", 3, "H", "W"], _pooled()),
                                 "dynamic height or width"),
}


@pytest.fixture(params=sorted(BAD_INPUTS))
def bad_model(request, model_copy):
    """(path, fragment): a graph of the wrong input, carrying the tiny model's own metadata, beside it."""
    make, fragment = BAD_INPUTS[request.param]
    model = make()
    onnx.checker.check_model(model)
    copied = onnx.load(model_copy, load_external_data=False).metadata_props
    helper.set_model_props(model, {prop.key: prop.value for prop in copied})
    path = os.path.join(os.path.dirname(model_copy), "copied_metadata.onnx")
    onnx.save(model, path)
    return path, fragment


COMMANDS = {
    "calibrate": lambda m, other, images, out: ["calibrate", m, "--data", images, "--num-images", "2",
                                                "-o", os.path.join(out, "q.onnx")],
    "compare-layers": lambda m, other, images, out: ["compare-layers", m, other, "--data", images,
                                                     "--num-images", "2"],
    "bundle": lambda m, other, images, out: ["bundle", m, "-o", os.path.join(out, "bundle"), "--no-reference"],
    "benchmark-engine": lambda m, other, images, out: ["benchmark-engine", m, "--data", images, "--num-images", "2",
                                                       "--batch-sizes", "1", "--iterations", "1"],
    "build --dry-run": lambda m, other, images, out: ["build", m, "--dry-run", "--trt-version", "10.3"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_refuses_the_input(bad_model, model_copy, images, tmp_path, command):
    path, fragment = bad_model
    result = run_cli(COMMANDS[command](path, model_copy, images, str(tmp_path / "out")))
    line = assert_user_error(result, os.path.basename(path), fragment)
    assert "N x 3 x H x W float32" in line
    assert listing(tmp_path / "out") == {}  # nothing written (bundle may have made the empty folder)


def test_deploy_infer_refuses_the_input(bad_model, images, capsys):
    path, fragment = bad_model
    assert infer_main([path, images]) == 2
    captured = capsys.readouterr()
    assert fragment in one_error_line(captured.err, captured.out)


def test_deploy_build_dry_run_refuses_the_input_and_a_model_without_metadata(bad_model, model_copy, capsys):
    path, fragment = bad_model
    assert deploy_build.main([path, "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert fragment in one_error_line(captured.err, captured.out)
    bare = onnx.load(model_copy)
    del bare.metadata_props[:]
    onnx.save(bare, model_copy)
    assert deploy_build.main([model_copy, "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "no eca-deploy metadata" in one_error_line(captured.err, captured.out)


def test_the_check_holds_where_only_onnx_runtime_reads_the_model(bad_model, monkeypatch):
    """A Jetson often lacks the onnx package: ONNX Runtime's view of the input gives the same refusal."""
    from deploy import metadata
    from deploy.errors import UserError
    path, fragment = bad_model
    monkeypatch.setattr(metadata, "load_onnx_proto", lambda model_path: (None, None))
    with pytest.raises(UserError, match=fragment):
        metadata.read_model_info(path)
