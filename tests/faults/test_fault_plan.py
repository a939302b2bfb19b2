"""Models TensorRT's parser would refuse are refused by the plan (`build --dry-run`), and by every command that reads
them, with one line naming the file: cycles, dangling inputs and outputs, IR versions outside the parser's range, and
sparse weights kept outside the model's folder (issue 29, round 4)."""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploy.infer import main as infer_main
from tests.faults.conftest import assert_user_error, one_error_line, run_cli


def _edit(path, change):
    model = onnx.load(path, load_external_data=False)
    change(model)
    with open(path, "wb") as handle:
        handle.write(model.SerializeToString())


def _cycle(model):
    """The node that reads the image reads a tensor made further down instead: no order runs the graph."""
    image = model.graph.input[0].name
    first = next(node for node in model.graph.node if image in node.input)
    later = next(node for node in model.graph.node if node.op_type == "Relu" and node is not first)
    first.input[list(first.input).index(image)] = later.output[0]


def _self_loop(model):
    node = model.graph.node[3]
    node.input[0] = node.output[0]


def _disconnected_output(model):
    model.graph.output.append(helper.make_tensor_value_info("nowhere", TensorProto.FLOAT, [1, 10]))


def _dangling_input(model):
    model.graph.node[2].input[0] = "never_made"


def _ir(version):
    def change(model):
        model.ir_version = version
    return change


def _sparse_outside(model):
    """A sparse initializer whose values live in ../sparse.bin, beside the model's folder."""
    values = numpy_helper.from_array(np.ones(2, dtype=np.float32), "sparse_values")
    values.data_location = TensorProto.EXTERNAL
    values.ClearField("raw_data")
    for key, value in (("location", "../sparse.bin"), ("offset", "0"), ("length", "8")):
        entry = values.external_data.add()
        entry.key, entry.value = key, value
    indices = numpy_helper.from_array(np.array([0, 3], dtype=np.int64), "sparse_indices")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4]))


def _sparse_absolute(model):
    _sparse_outside(model)
    model.graph.sparse_initializer[0].values.external_data[0].value = "/etc/passwd"


FAULTS = {
    "cycle": (_cycle, "cycle"),
    "self loop": (_self_loop, "cycle"),
    "disconnected output": (_disconnected_output, "graph output 'nowhere' is not produced"),
    "dangling input": (_dangling_input, "'never_made'"),
    "sparse data outside the folder": (_sparse_outside, "outside the model's folder"),
    "sparse data at an absolute path": (_sparse_absolute, "not a path inside the model's folder"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_plan_refuses_what_the_parser_would(model_copy, tmp_path, fault):
    change, fragment = FAULTS[fault]
    _edit(model_copy, change)
    result = run_cli(["build", model_copy, "--dry-run", "--trt-version", "10.3"])
    line = assert_user_error(result, fragment)
    assert model_copy in line  # the file is named


@pytest.mark.parametrize("fault", ["cycle", "disconnected output", "sparse data outside the folder"])
def test_deploy_infer_and_bundle_refuse_them_too(model_copy, images, tmp_path, fault, capsys):
    change, fragment = FAULTS[fault]
    _edit(model_copy, change)
    code = infer_main([model_copy, images])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert fragment in one_error_line(captured.err, captured.out)
    assert_user_error(run_cli(["bundle", model_copy, "-o", tmp_path / "bundle"]), fragment)
    assert not (tmp_path / "bundle").exists()  # nothing shipped, the sparse file least of all


@pytest.mark.parametrize("version, fragment", [(0, "IR version 0 is older"), (2, "IR version 2 is older"),
                                               (11, "IR version 11 is newer")])
def test_plan_holds_the_ir_version_to_the_parsers_range(model_copy, version, fragment):
    _edit(model_copy, _ir(version))
    assert_user_error(run_cli(["build", model_copy, "--dry-run", "--trt-version", "10.3"]), fragment,
                      "TensorRT 10.3")


def test_unsorted_but_acyclic_graph_is_planned(model_copy):
    """TensorRT's parser sorts the nodes itself (toposort), so only a cycle is a fault, not the listing order."""
    def reverse(model):
        nodes = list(model.graph.node)
        del model.graph.node[:]
        model.graph.node.extend(reversed(nodes))
    _edit(model_copy, reverse)
    result = run_cli(["build", model_copy, "--dry-run", "--trt-version", "10.3"])
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--workspace", "99999999999999"], "--workspace 99999999999999 is above the limit of 1048576"),
    (["--trt-version", "10.3.99999999999999999999"], "bad TensorRT version"),
    (["--trt-version", "1000.3"], "bad TensorRT version"),
])
def test_build_options_with_sizes_are_bounded(model_copy, args, fragment):
    assert_user_error(run_cli(["build", model_copy, "--dry-run"] + args), fragment)


def test_bounds_are_stated_in_help():
    text = run_cli(["build", "--help"]).stdout
    assert "at most 1048576" in " ".join(text.split())
    assert "below 100" in " ".join(text.split())
    assert "at most 63" in " ".join(run_cli(["export", "--help"]).stdout.split())


def test_bounds_do_not_touch_a_good_model(model_copy):
    result = run_cli(["build", model_copy, "--dry-run", "--workspace", "4096", "--trt-version", "10.3.0.30"])
    assert result.exit_code == 0, result.stderr
    assert os.path.isfile(model_copy)
