"""What ONNX Runtime raises (a model it cannot load, an op it lacks, an index out of range while running) and what a
parser raises (JSON nested 100,000 deep) is one line naming the file, exit 2, in every command that runs models
(issue 29, round 4)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploy.bench import main as bench_main
from deploy.infer import main as infer_main
from tests.faults.conftest import assert_user_error, one_error_line, run_cli


def _edit(path, change):
    model = onnx.load(path, load_external_data=False)
    change(model)
    with open(path, "wb") as handle:
        handle.write(model.SerializeToString())


def _after_logits(model, make_nodes):
    """Rename the node output that is the graph's output, and let ``make_nodes(raw, out)`` compute it anew."""
    out = model.graph.output[0].name
    producer = next(node for node in model.graph.node if out in node.output)
    producer.output[list(producer.output).index(out)] = "raw_logits"
    nodes, initializers = make_nodes("raw_logits", out)
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(initializers)


def _gather_out_of_range(model):
    """Runs only when data flows: ORT's Gather checks its indices while running, not when it loads."""
    indices = np.arange(1000, dtype=np.int64)
    indices[-1] = 5000
    _after_logits(model, lambda raw, out: ([helper.make_node("Gather", [raw, "picked"], [out], axis=1)],
                                           [numpy_helper.from_array(indices, "picked")]))


def _custom_op(model):
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    _after_logits(model, lambda raw, out: ([helper.make_node("Mystery", [raw], [out], domain="com.example")], []))


def _huge_initializer(model):
    """2^40 float32 elements declared, none stored: ONNX Runtime refuses it as it loads."""
    huge = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[1, 2 ** 40])
    _after_logits(model, lambda raw, out: ([helper.make_node("Mul", [raw, "huge"], [out])], [huge]))


RUNTIME = {"gather index out of range": (_gather_out_of_range, "ONNX Runtime failed to run"),
           "custom op": (_custom_op, "ONNX Runtime cannot load"),
           "2^40-element initializer": (_huge_initializer, "ONNX Runtime cannot load")}


@pytest.mark.parametrize("fault", sorted(RUNTIME))
def test_deploy_infer(model_copy, images, fault, capsys):
    change, fragment = RUNTIME[fault]
    _edit(model_copy, change)
    code = infer_main([model_copy, images])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    line = one_error_line(captured.err, captured.out)
    assert fragment in line and model_copy in line, line


@pytest.mark.parametrize("fault", sorted(RUNTIME))
def test_calibrate(model_copy, images, fault):
    change, fragment = RUNTIME[fault]
    _edit(model_copy, change)
    result = run_cli(["calibrate", model_copy, "--data", images, "--num-images", "4", "--workers", "0"])
    line = assert_user_error(result, fragment)
    assert model_copy in line


@pytest.mark.parametrize("fault", ["gather index out of range", "custom op"])
def test_benchmark_engine(model_copy, images, fault):
    change, fragment = RUNTIME[fault]
    _edit(model_copy, change)
    result = run_cli(["benchmark-engine", model_copy, "--data", images, "--num-images", "4", "--batch-sizes", "2",
                      "--iterations", "1"])
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert "ONNX Runtime" in one_error_line(result.stderr, result.stdout)


def test_deploy_bench_names_the_run_error(model_copy, capsys):
    _edit(model_copy, _gather_out_of_range)
    code = bench_main([model_copy, "--batch-sizes", "1", "--iterations", "1", "--warm-up", "0"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err
    assert "out of" in captured.err or "ONNX Runtime" in captured.err, captured.err


def test_compare_layers_on_a_model_ort_cannot_load(model_copy, images, tmp_path):
    other = str(tmp_path / "models" / "other.onnx")
    model = onnx.load(model_copy)
    _custom_op(model)
    onnx.save(model, other)
    result = run_cli(["compare-layers", model_copy, other, "--data", images, "--num-images", "2", "--workers", "0"])
    assert_user_error(result, "ONNX Runtime cannot load", other)


# -- parse errors ------------------------------------------------------------------------------------------------

BOMB = "[" * 100000


def test_metadata_nesting_bomb(model_copy, images, capsys):
    def change(model):
        for prop in model.metadata_props:
            if prop.key == "mean":
                prop.value = BOMB
    _edit(model_copy, change)
    code = infer_main([model_copy, images])
    captured = capsys.readouterr()
    assert code == 2
    line = one_error_line(captured.err, captured.out)
    assert "mean" in line and model_copy in line


def test_json_nesting_bomb_in_manifest_sidecar_and_pipeline_state(tmp_path):
    from deploy.errors import UserError
    from deploy.manifest import MANIFEST, read_manifest
    from deploy.metadata import read_sidecar
    from pipeline.run import STATE_FILE, StepRunner
    for name in (MANIFEST, "m.engine.json", STATE_FILE):
        (tmp_path / name).write_text(BOMB)
    with pytest.raises(UserError, match=MANIFEST):
        read_manifest(str(tmp_path))
    with pytest.raises(UserError, match="m.engine.json"):
        read_sidecar(str(tmp_path / "m.engine"))
    heard = []
    StepRunner(str(tmp_path), echo=heard.append)  # only a cache: a damaged one is noted and rebuilt
    assert len(heard) == 1 and STATE_FILE in heard[0], heard


def test_proof_preprocess_nesting_bomb(tmp_path):
    """The proof's preprocess field is JSON too: a RecursionError there is a damaged field, one line."""
    from deploy.errors import UserError
    from deploy.reference import REFERENCE_FORMAT, load_reference
    path = str(tmp_path / "reference.npz")
    np.savez(path, format=np.array(REFERENCE_FORMAT), preprocess=np.array(BOMB))
    with pytest.raises(UserError, match="field preprocess"):
        load_reference(path)
