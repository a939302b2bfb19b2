"""`cli.py calibrate` as a user runs it: the files it writes, --json, and one-line errors."""
import json
import re
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
    # Every artifact follows the stem of -o.
    out_dir = tmp_path / "out"
    assert payload["int8_models"] == {"tensorrt": str(out), "cpu": str(out_dir / "eca_trt.int8.cpu.onnx")}
    assert payload["num_images"] == 40 and payload["method"] == "minmax" and payload["skipped"] == []
    assert payload["calib_cache"] == str(out_dir / "eca_trt.calib.cache")
    assert payload["ranges_json"] == str(out_dir / "eca_trt.ranges.json")
    assert payload["fp16_model"] == str(out_dir / "eca_trt.fp16.onnx")
    for key in ("calib_cache", "ranges_json", "fp16_model"):
        assert os.path.isfile(payload[key])
    assert payload["targets"]["cpu"]["selection"] == "explicit" and payload["heldout_images"] == 0
    cache = read_calibration_cache(payload["calib_cache"])
    assert (cache.trt_version, cache.algorithm) == (100300, "MinMaxCalibration") and "input" in cache.scales
    assert read_model_info(payload["fp16_model"]).precision == "fp16"
    cpu = read_model_info(payload["int8_models"]["cpu"])
    assert cpu.precision == "int8" and cpu.extra["quant_target"] == "cpu"


def test_calibrate_human_output_and_no_fp16(digits_eca_onnx, digits_split, tmp_path):
    model = str(tmp_path / "eca.onnx")
    shutil.copy(digits_eca_onnx, model)
    result = _run(["calibrate", model, "--data", digits_split[0], "--num-images", "20", "--no-fp16",
                   "--method", "entropy", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "wrote {}".format(tmp_path / "eca.int8.tensorrt.onnx") in result.stdout
    assert "TensorRT 10.3.0 calibration cache, EntropyCalibration2" in result.stdout
    assert not (tmp_path / "eca.fp16.onnx").exists()


def test_calibrate_auto_by_default_prints_the_candidates(digits_eca_onnx, digits_split, tmp_path):
    model = str(tmp_path / "eca.onnx")
    shutil.copy(digits_eca_onnx, model)
    args = ["calibrate", model, "--data", digits_split[0], "--num-images", "160", "--no-fp16",
            "--cache-dir", str(tmp_path / "cache")]
    result = _run(args)
    assert result.exit_code == 0, result.output
    assert "calibrated on 96 images (64 more held out to judge them)" in result.stdout
    for name in ("entropy", "minmax", "percentile 99.9 ", "percentile 99.99 ", "percentile 99.999", "mse"):
        assert name in result.stdout
    assert result.stdout.count("<- chosen") == 1
    payload = json.loads(_run(args + ["--json"]).stdout)
    outcome = payload["targets"]["tensorrt"]
    assert payload["requested_method"] == "auto" and outcome["selection"] == "auto" and len(outcome["candidates"]) == 6
    meta = read_model_info(payload["int8_models"]["tensorrt"]).extra
    assert meta["calibration_method"] == outcome["method"] and meta["float_layers"] == "[]"


def test_calibrate_missed_target_exits_1_with_one_line(digits_mobilenet_onnx, digits_split, tmp_path):
    model = str(tmp_path / "eca.onnx")
    shutil.copy(digits_mobilenet_onnx, model)
    # Entropy agrees on about 98% of the held-out digits with this MobileNetV2 (test_fallback.py), and no layer
    # may go float. The best model is still written, and the line says so.
    result = _run(["calibrate", model, "--data", digits_split[0], "--no-fp16", "--method", "entropy",
                   "--min-agreement", "100", "--max-float-layers", "0", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 1
    line = _single_error_line(result)
    assert "best agreement" in line and "judging images held out of the calibration images; reads high" in line
    assert "0 float layer(s) tried" in line
    assert os.path.isfile(tmp_path / "eca.int8.tensorrt.onnx") and str(tmp_path / "eca.int8.tensorrt.onnx") in line


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


def test_calibrate_scores_on_separate_holdout_images(digits_eca_onnx, digits_split, tmp_path):
    # Validation digits the model never trained on judge the candidates; every --data image feeds the ranges.
    model = str(tmp_path / "eca.onnx")
    shutil.copy(digits_eca_onnx, model)
    cache = str(tmp_path / "cache")
    args = ["calibrate", model, "--data", digits_split[0], "--num-images", "96", "--no-fp16", "--cache-dir", cache,
            "--holdout-data", digits_split[1], "--holdout-images", "70"]
    result = _run(args)
    assert result.exit_code == 0, result.output
    assert "calibrated on 96 images (70 separate held-out images to judge them)" in result.stdout
    assert "tensorrt target, scored on 70 judging images (they chose it; unseen images measure it)" in result.stdout
    assert "reads high" not in result.stdout
    result = _run(args + ["--max-top1-drop", "100"])  # labeled: a drop can be asked
    assert result.exit_code == 0, result.output
    assert re.search(r"^target met \(tensorrt\): top-1 drop -?[\d.]+ pt <= 100 pt on 70 judging images "
                     r"\(they chose it; unseen images measure it\)$", result.stdout, re.M)
    payload = json.loads(_run(args + ["--json", "--max-top1-drop", "100"]).stdout)
    assert payload["num_images"] == 96 and payload["heldout_images"] == 70 and payload["heldout_source"] == "separate"
    assert "top1" in payload["targets"]["tensorrt"]["heldout"]
    assert payload["judged_on"] == "on 70 judging images (they chose it; unseen images measure it)"
    meta = read_model_info(payload["int8_models"]["tensorrt"]).extra
    assert meta["calibration_heldout_source"] == "separate" and meta["calibration_heldout_images"] == "70"
    # every image that calibrated or judged the model is recorded, so later stages can leave it out
    assert len(meta["calibration_image_digests"].split()) == 96 + 70

    # Calibration images cannot judge themselves.
    result = _run(["calibrate", model, "--data", digits_split[0], "--num-images", "96", "--cache-dir", cache,
                   "--holdout-data", digits_split[0]])
    assert result.exit_code == 2 and "also calibration images" in _single_error_line(result)
