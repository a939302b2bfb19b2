"""`cli.py compare-layers` as a user runs it: the table, --json, the plot, and one-line errors."""
import json
import shutil

from click.testing import CliRunner

from cli import cli


def _run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_compare_layers_json_text_and_plot(digits_eca_onnx, digits_split, tmp_path):
    model = str(tmp_path / "eca.onnx")
    shutil.copy(digits_eca_onnx, model)
    calibrated = _run(["calibrate", model, "--data", digits_split[0], "--num-images", "64", "--method", "minmax",
                       "--target", "cpu", "--cache-dir", str(tmp_path / "cache"), "--json"])
    assert calibrated.exit_code == 0, calibrated.output
    outputs = json.loads(calibrated.stdout)
    plot = tmp_path / "sqnr.png"
    args = ["compare-layers", model, outputs["int8_models"]["cpu"], "--data", digits_split[1], "--num-images", "16",
            "--cache-dir", str(tmp_path / "cache")]
    result = _run(args + ["--json", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    layers = payload["layers"]
    assert payload["worst"] == layers[0]["name"] and payload["num_images"] == 16
    assert [layer["sqnr_db"] for layer in layers] == sorted(layer["sqnr_db"] for layer in layers)
    assert set(layers[0]) >= {"name", "op", "sqnr_db", "cosine", "max_abs_error"}
    assert {layer["op"] for layer in layers} == {"Conv", "Gemm"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    text = _run(args)
    assert text.exit_code == 0 and "worst: " + payload["worst"] in text.stdout

    fp16 = _run(["compare-layers", model, outputs["fp16_model"], "--data", digits_split[1], "--num-images", "8",
                 "--cache-dir", str(tmp_path / "cache"), "--json"])
    assert fp16.exit_code == 0, fp16.output
    assert min(l["sqnr_db"] for l in json.loads(fp16.stdout)["layers"]) > layers[-1]["sqnr_db"]


def test_compare_layers_wants_the_fp32_model_first(digits_eca_onnx, digits_split, tmp_path):
    from precision.fp16 import convert_to_fp16_file
    fp16 = str(tmp_path / "eca.fp16.onnx")
    convert_to_fp16_file(digits_eca_onnx, fp16)
    result = CliRunner().invoke(cli, ["compare-layers", fp16, digits_eca_onnx, "--data", digits_split[1]])
    assert result.exit_code == 2 and "give the FP32 model first" in result.stderr
