"""`cli.py export` and `cli.py models` as a user runs them: exit codes, one-line errors, --json."""
import json
import pytest
import torch
from click.testing import CliRunner

import models
from cli import cli

SMALL = ["--input-size", "64", "--num-classes", "10"]


def _run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _single_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ")
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    return lines[-1]


def test_export_json_reports_parity(tmp_path):
    out = tmp_path / "r18.onnx"
    result = _run(["export", "resnet18", "-o", str(out), "--json"] + SMALL)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["parity"]["passed"] and payload["parity"]["max_abs_error"] < 1e-3
    assert [b["batch_size"] for b in payload["parity"]["batches"]] == [1, 4]
    assert all(b["top1_agreement"] == 1.0 for b in payload["parity"]["batches"])
    assert "random weights (seed 0)" in result.stderr
    assert out.exists()


def test_export_human_summary_with_checkpoint(tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "eca.pth"
    torch.save(models.create_model("eca_resnet18", num_classes=10, stem_width=16).state_dict(), ckpt)
    result = _run(["export", "eca_resnet18", "--weights", str(ckpt), "--input-size", "64", "-o",
                   str(tmp_path / "eca.onnx")])
    assert result.exit_code == 0, result.output
    assert "parity batch  1" in result.stdout and "-> ok" in result.stdout
    assert "random" not in result.stderr


def test_unknown_model_lists_known_names():
    result = _run(["export", "eca_resnet99"])
    assert result.exit_code == 2
    line = _single_error_line(result)
    assert "eca_resnet50" in line and "mobilenet_v2" in line


@pytest.mark.parametrize("content", [None, b"garbage bytes"])
def test_missing_or_corrupt_checkpoint(tmp_path, content):
    path = tmp_path / "ckpt.pth"
    if content is not None:
        path.write_bytes(content)
    result = _run(["export", "resnet18", "--weights", str(path), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    _single_error_line(result)
    assert not (tmp_path / "m.onnx").exists()


def test_checkpoint_of_another_architecture(tmp_path):
    path = tmp_path / "se.pth"
    torch.save(models.create_model("se_resnet18", num_classes=10, stem_width=16).state_dict(), path)
    result = _run(["export", "eca_resnet18", "--weights", str(path), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert "missing keys" in _single_error_line(result)


def test_unwritable_output_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    result = _run(["export", "resnet18", "-o", str(blocker / "m.onnx")] + SMALL)
    assert result.exit_code == 2
    assert "cannot write" in _single_error_line(result)


def test_batch_options_exclude_each_other(tmp_path):
    result = _run(["export", "resnet18", "--batch", "2", "--dynamic-batch", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    _single_error_line(result)


def test_models_json_gives_raw_counts():
    result = _run(["models", "resnet18", "eca_resnet18", "--json"])
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["resnet18"] == {"name": "resnet18", "params": 11689512, "macs": 1824545792}
    assert set(rows) == {"resnet18", "eca_resnet18"}


def test_models_rejects_unknown_names():
    result = _run(["models", "resnet19"])
    assert result.exit_code == 2
    _single_error_line(result)


def test_models_table_in_binary_units():
    result = _run(["models", "resnet18", "cbam_resnet34"])
    assert result.exit_code == 0
    line = next(l for l in result.stdout.splitlines() if l.startswith("resnet18 "))
    assert "11.148M" in line and "1.699" in line
    assert "20.943M" in result.stdout and "3.428" in result.stdout


def test_export_fp16_writes_a_strongly_typed_model_beside_fp32(tmp_path):
    import numpy as np
    import onnx
    import onnxruntime as ort
    out = tmp_path / "r18.onnx"
    result = _run(["export", "resnet18", "-o", str(out), "--precision", "fp16", "--json"] + SMALL)
    assert result.exit_code == 0, result.output
    fp16_path = json.loads(result.stdout)["fp16"]["path"]
    assert fp16_path == str(tmp_path / "r18.fp16.onnx")
    model = onnx.load(fp16_path)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 I/O kept
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    assert {p.key: p.value for p in model.metadata_props}["precision"] == "fp16"
    x = np.random.RandomState(0).randn(2, 3, 64, 64).astype(np.float32)
    runs = [ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            for p in (str(out), fp16_path)]
    assert np.array_equal(runs[0].argmax(1), runs[1].argmax(1))


def test_export_sets_records_and_prints_the_preprocessing(tmp_path):
    from deploy.metadata import read_model_info

    out = tmp_path / "r18.onnx"
    args = ["export", "resnet18", "-o", str(out), "--num-classes", "10", "--crop", "64", "--resize", "73",
            "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--interpolation", "bicubic"]
    result = _run(args)
    assert result.exit_code == 0, result.output
    line = "  preprocessing: resize 73 (bicubic), center crop 64, mean 0.5,0.5,0.5, std 0.25,0.25,0.25"
    assert line in result.stdout.splitlines()
    spec = read_model_info(str(out)).preprocess
    assert (spec.input_size, spec.resize_size, spec.interpolation) == (64, 73, "bicubic")
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.25, 0.25, 0.25)

    payload = json.loads(_run(args + ["--json"]).stdout)
    assert payload["preprocessing"] == {"resize_size": 73, "crop_size": 64, "interpolation": "bicubic",
                                        "mean": [0.5] * 3, "std": [0.25] * 3, "normalize_in_graph": False,
                                        "summary": line.split(": ", 1)[1]}


def test_export_default_preprocessing_follows_the_input_size(tmp_path):
    result = _run(["export", "resnet18", "-o", str(tmp_path / "m.onnx")] + SMALL)
    assert result.exit_code == 0, result.output
    assert "  preprocessing: resize 73 (bilinear), center crop 64, mean 0.485,0.456,0.406, std 0.229,0.224,0.225" \
        in result.stdout.splitlines()


@pytest.mark.parametrize("args, message", [
    (["--crop", "64", "--input-size", "96"], "--crop 64 and --input-size 96 disagree"),
    (["--mean", "123.7,116.3,103.5"], "--mean 123.7,116.3,103.5 is on the 0-255 scale"),
    (["--std", "0.2,0.2"], "--std takes one value per RGB channel (three), got 2"),
    (["--mean", "a,b,c"], "--mean takes three comma-separated numbers"),
    (["--crop", "64", "--resize", "60"], "resize size 60 must be at least the input size 64"),
])
def test_bad_preprocessing_options_are_one_line_errors(tmp_path, args, message):
    result = _run(["export", "resnet18", "-o", str(tmp_path / "m.onnx"), "--num-classes", "10"] + args)
    assert result.exit_code == 2
    assert message in _single_error_line(result)
    assert not (tmp_path / "m.onnx").exists()
