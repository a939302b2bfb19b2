"""`cli.py calibrate` as a user runs it: the files it writes, --json, and one-line errors."""
import json
import os
import shutil

import onnx
from click.testing import CliRunner

from cli import cli
from deploy.calib_cache import read_calibration_cache
from deploy.metadata import read_model_info


def _run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _single_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[-1]


def test_calibrate_writes_every_artifact(digits_eca_onnx, digits_split, tmp_path):
    model = str(tmp_path / "eca.onnx")
    shutil.copy(digits_eca_onnx, model)
    out = tmp_path / "out" / "eca_trt.onnx"
    result = _run(["calibrate", model, "--data", digits_split[0], "--target", "tensorrt", "--target", "cpu",
                   "--method", "minmax", "--num-images", "40", "--trt-version", "10.3", "-o", str(out),
                   "--cache-dir", str(tmp_path / "cache"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # nothing but JSON on stdout
    assert payload["int8_models"] == {"tensorrt": str(out), "cpu": str(tmp_path / "out" / "eca.int8.cpu.onnx")}
    assert payload["num_images"] == 40 and payload["method"] == "minmax" and payload["skipped"] == []
    for key in ("calib_cache", "ranges_json", "fp16_model"):
        assert os.path.dirname(payload[key]) == str(tmp_path / "out") and os.path.isfile(payload[key])
    cache = read_calibration_cache(payload["calib_cache"])
    assert (cache.trt_version, cache.algorithm) == (100300, "MinMaxCalibration") and "input" in cache.scales
    assert read_model_info(payload["fp16_model"]).precision == "fp16"
    cpu = read_model_info(payload["int8_models"]["cpu"])
    assert cpu.precision == "int8" and cpu.extra["quant_target"] == "cpu"


def test_calibrate_human_output_and_no_fp16(digits_eca_onnx, digits_split, tmp_path):
    model = str(tmp_path / "eca.onnx")
    shutil.copy(digits_eca_onnx, model)
    result = _run(["calibrate", model, "--data", digits_split[0], "--num-images", "20", "--no-fp16",
                   "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "wrote {}".format(tmp_path / "eca.int8.tensorrt.onnx") in result.stdout
    assert "TensorRT 8.6.0 calibration cache, EntropyCalibration2" in result.stdout
    assert not (tmp_path / "eca.fp16.onnx").exists()


def test_calibrate_errors_are_one_line(digits_eca_onnx, digits_split, tmp_path):
    model = str(tmp_path / "eca.onnx")
    shutil.copy(digits_eca_onnx, model)
    result = _run(["calibrate", model, "--data", str(tmp_path / "absent")])
    assert result.exit_code == 2 and "no such data folder" in _single_error_line(result)

    bare = onnx.load(model)
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    result = _run(["calibrate", str(tmp_path / "bare.onnx"), "--data", digits_split[0]])
    assert result.exit_code == 2 and "metadata" in _single_error_line(result)

    result = _run(["calibrate", model, "--data", digits_split[0], "--trt-version", "eight"])
    assert result.exit_code == 2 and "TensorRT version" in _single_error_line(result)

    result = _run(["calibrate", model, "--data", digits_split[0], "-o", model])
    assert result.exit_code == 2 and "overwrite" in _single_error_line(result)
