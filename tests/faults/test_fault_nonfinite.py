"""NaN or infinity in a model's outputs is never shown as a result: deploy.infer, attention --deployed, compare-layers
and deploy.check name the images that gave them and exit non-zero, and every --json is strict JSON (issue 29, round
4)."""
import json
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from deploy.infer import main as infer_main
from tests.faults.conftest import assert_user_error, one_error_line, run_cli


def _strict(text: str):
    """json.loads that refuses NaN and Infinity, which Python's json accepts and most parsers do not."""
    def refuse(token):
        raise AssertionError("not strict JSON: {}".format(token))
    return json.loads(text, parse_constant=refuse)


def _poison_head(path, value):
    """Set the classifier's bias (the last Gemm's third input) to ``value`` in every class."""
    model = onnx.load(path)
    gemm = [node for node in model.graph.node if node.op_type == "Gemm"][-1]
    for index, init in enumerate(model.graph.initializer):
        if init.name == gemm.input[2]:
            bias = numpy_helper.to_array(init).copy()
            bias[:] = value
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(bias, init.name))
    onnx.save(model, path)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_deploy_infer_names_the_images_and_fails(model_copy, images, value, capsys):
    _poison_head(model_copy, value)
    code = infer_main([model_copy, images])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    line = one_error_line(captured.err, captured.out)
    assert "NaN or infinite" in line and "4 of 4 images" in line and model_copy in line, line
    assert "nan%" not in captured.out and "%" not in captured.out  # no probability is printed
    assert captured.out.count("no result") == 4


def test_deploy_infer_json_stays_strict(model_copy, images, capsys):
    _poison_head(model_copy, np.nan)
    code = infer_main([model_copy, images, "--json"])
    captured = capsys.readouterr()
    assert code == 1
    rows = [_strict(line) for line in captured.out.splitlines()]
    assert [row["error"] for row in rows[:-1]] == ["the model's outputs hold NaN or infinite values"] * 4
    assert rows[-1]["summary"]["nonfinite_images"] == 4


@pytest.mark.parametrize("std", ["[1e-40, 1e-40, 1e-40]", "[0.2, 1e-30, 0.2]", "[0.2, 0.00001, 0.2]"])
def test_a_std_that_overflows_the_inputs_is_refused(model_copy, images, std, capsys):
    model = onnx.load(model_copy)
    for prop in model.metadata_props:
        if prop.key == "std":
            prop.value = std
    onnx.save(model, model_copy)
    code = infer_main([model_copy, images])
    captured = capsys.readouterr()
    assert code == 2
    assert "at least 0.0001" in one_error_line(captured.err, captured.out)


def test_export_refuses_a_tiny_std(tmp_path):
    assert_user_error(run_cli(["export", "eca_resnet18", "--std", "0.2,1e-40,0.2", "-o", tmp_path / "m.onnx"]),
                      "at least 0.0001")


def test_describe_images_names_them_and_counts_the_rest():
    from deploy.compare import describe_images, nonfinite_rows
    values = np.zeros((9, 3), dtype=np.float32)
    values[[1, 2, 3, 4, 5, 7], 0] = np.nan
    values[8, 2] = np.inf
    rows = nonfinite_rows(values)
    assert rows.tolist() == [1, 2, 3, 4, 5, 7, 8]
    names = ["img{}.png".format(i) for i in range(9)]
    assert describe_images(rows, names, 9) == "7 of 9 images (img1.png, img2.png, img3.png, img4.png, img5.png, and 2 more)"
    assert describe_images([0], None, 1) == "1 of 1 images (#1)"
    assert nonfinite_rows(np.zeros((2, 2), dtype=np.int64)).tolist() == []


def test_compare_layers_refuses_a_nan_layer(model_copy, images, tmp_path):
    other = str(tmp_path / "models" / "nan.onnx")
    shutil.copy(model_copy, other)
    _poison_head(other, np.nan)
    result = run_cli(["compare-layers", model_copy, other, "--data", images, "--num-images", "4", "--workers", "0",
                      "--json"])
    assert result.exit_code == 1, result.stderr
    line = one_error_line(result.stderr, result.stdout)
    assert other in line and "Gemm" in line and "NaN or infinite" in line and "4 of 4 images" in line, line
    assert "200" not in result.stdout  # no SQNR for it


def test_attention_deployed_refuses_a_nan_model(digits_split, digits_eca_checkpoint, digits_eca_onnx, tmp_path):
    deployed = str(tmp_path / "nan.onnx")
    shutil.copy(digits_eca_onnx, deployed)
    _poison_head(deployed, np.nan)
    result = run_cli(["attention", "eca_resnet18", "--weights", digits_eca_checkpoint, "--data", digits_split[1],
                      "--num-images", "20", "--deployed", deployed, "--out", tmp_path / "out", "--workers", "0"])
    assert result.exit_code == 1, (result.stderr, result.stdout)
    line = one_error_line(result.stderr, result.stdout)
    assert deployed in line and "NaN or infinite" in line, line
    assert "max abs error 0" not in result.stdout


def test_deploy_check_fails_a_nan_model_and_its_json_is_strict(digits_bundle, tmp_path):
    import subprocess
    import sys
    root = str(tmp_path / "bundle")
    shutil.copytree(digits_bundle[0], root)
    _poison_head(os.path.join(root, os.path.basename(digits_bundle[1][0])), np.nan)
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.run([sys.executable, "-m", "deploy.check", "--json"], cwd=root, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    report = _strict(proc.stdout)
    broken = next(a for a in report["artifacts"] if a["name"] == os.path.basename(digits_bundle[1][0]))
    assert broken["status"] == "FAIL"
    assert broken["max_abs_error"] is None or np.isfinite(broken["max_abs_error"])


def test_strict_json_maps_non_finite_numbers_to_null_with_a_note():
    from deploy.schema import dumps_strict
    heard = []
    text = dumps_strict({"spread": float("inf"), "rows": [np.float32("nan"), 1.5], "n": np.int64(3)}, heard.append)
    assert _strict(text) == {"spread": None, "rows": [None, 1.5], "n": 3}
    assert heard == ["2 field(s) were NaN or infinite and are written as null: spread, rows[0]"]


def test_benchmark_engine_and_bundle_refuse_a_nan_model(tiny_checkpoint, images, tmp_path):
    """benchmark-engine reported "max abs err nan, cosine 1.000000" and exit 0."""
    from exporter import export_model
    model = str(tmp_path / "m.onnx")
    export_model("eca_resnet18", model, weights=tiny_checkpoint, input_size=32, do_simplify=False,
                 parity_batch_sizes=(2,))
    _poison_head(model, np.nan)
    result = run_cli(["benchmark-engine", model, "--weights", tiny_checkpoint, "--data", images, "--iterations", "1",
                      "--batch-sizes", "2", "--report", tmp_path / "report"])
    assert result.exit_code == 1, (result.stderr, result.stdout)
    line = one_error_line(result.stderr, result.stdout)
    assert model in line and "4 of 4 images" in line and "astronaut.png" in line, line
    assert not (tmp_path / "report").exists()
    result = run_cli(["bundle", model, "--weights", tiny_checkpoint, "--data", images, "-o", tmp_path / "out"])
    assert result.exit_code in (1, 2) and "gave NaN or infinite outputs" in one_error_line(result.stderr), \
        result.stderr
    assert not (tmp_path / "out").exists()
