"""`cli.py benchmark-engine` end to end on the digits model: report files, exit codes, data fallbacks."""
import json
import os

import pytest
from click.testing import CliRunner

from cli import cli
from deploy.fileio import sha256_file
from tests.digits import INPUT_SIZE

FAST = ["--batch-sizes", "1,4", "--iterations", "2", "--warmup", "0", "--threads", "2"]


@pytest.fixture(autouse=True)
def _private_image_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ECA_DEPLOY_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def wrong_weights_onnx(tmp_path_factory):
    """The digits architecture exported with random weights: a real artifact that disagrees with the reference."""
    from exporter import export_model

    path = str(tmp_path_factory.mktemp("wrong") / "eca_random.onnx")
    export_model("eca_resnet18", path, num_classes=10, input_size=INPUT_SIZE, stem_width=16)
    return path


def invoke(args):
    return CliRunner().invoke(cli, ["benchmark-engine"] + args, catch_exceptions=False)


def test_report_and_json(digits_eca_onnx, digits_eca_checkpoint, digits_split, tmp_path):
    report = tmp_path / "report"
    result = invoke([digits_eca_onnx, "--reference", "eca_resnet18", "--weights", digits_eca_checkpoint,
                     "--input-size", str(INPUT_SIZE), "--data", digits_split[1], "--num-images", "40",
                     "--report", str(report), "--json", "--max-top1-drop", "0.5"] + FAST)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    (artifact,) = payload["artifacts"]
    assert artifact["top1_agreement"] == 100.0 and artifact["top1_drop"] == 0.0
    assert payload["data"]["labeled"] and payload["reference"]["top1_accuracy"] >= 90.0
    assert sorted(os.listdir(report)) == ["benchmark.csv", "benchmark.json", "benchmark.md",
                                          "benchmark_accuracy_throughput.png", "benchmark_latency.png"]


def test_top1_drop_breach_exits_1_after_the_report(digits_eca_onnx, wrong_weights_onnx, digits_eca_checkpoint,
                                                   digits_split):
    result = invoke([digits_eca_onnx, wrong_weights_onnx, "--reference", "eca_resnet18", "--weights",
                     digits_eca_checkpoint, "--input-size", str(INPUT_SIZE), "--data", digits_split[1],
                     "--num-images", "40", "--max-top1-drop", "5"] + FAST)
    assert result.exit_code == 1
    assert "## Parity with the PyTorch reference" in result.stdout  # the report comes first
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: top-1 drop above 5 points (accuracy): eca_random.onnx ")
    assert "eca_digits.onnx" not in error
    assert ("note: --weights (sha256 {}) is not the checkpoint eca_random.onnx was exported from (random weights); "
            "--strict makes this an error".format(sha256_file(digits_eca_checkpoint)[:12])) in result.stderr


def test_an_input_size_override_that_disagrees_exits_2_before_timing(digits_eca_onnx, digits_eca_checkpoint):
    result = invoke([digits_eca_onnx, "--weights", digits_eca_checkpoint, "--input-size", "64"] + FAST)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: eca_digits.onnx takes 32x32 input but the reference eca_resnet18 is set up for 64x64; "
        "drop --input-size or give --input-size 32"]


def test_mismatched_classes_exit_2(tiny_imagenet_onnx, digits_eca_checkpoint):
    result = invoke([tiny_imagenet_onnx, "--weights", digits_eca_checkpoint] + FAST)
    assert result.exit_code == 2 and result.stdout == ""
    assert "tiny_eca.onnx has 1000 classes but the reference eca_resnet18 has 10" in result.stderr


def test_the_artifact_says_what_the_reference_is(digits_eca_onnx, digits_eca_checkpoint, digits_split):
    """Only the artifact and its checkpoint: architecture, input size, classes and preprocessing from metadata."""
    result = invoke([digits_eca_onnx, "--weights", digits_eca_checkpoint, "--data", digits_split[1],
                     "--num-images", "16", "--json"] + FAST)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["arch"] == "eca_resnet18" and payload["data"]["input_size"] == INPUT_SIZE
    assert payload["artifacts"][0]["top1_agreement"] == 100.0
    latency = payload["artifacts"][0]["timings"][0]["latency"]
    assert sorted(latency) == ["batch_size", "images_per_s", "max_ms", "mean_ms", "min_ms", "p50_ms", "p90_ms",
                               "p95_ms", "p99_ms", "runs", "spread", "unstable"]
    assert "not the checkpoint" not in result.stderr


def test_sample_photos_only_when_data_is_not_given(digits_eca_onnx, digits_eca_checkpoint, tmp_path):
    base = [digits_eca_onnx, "--reference", "eca_resnet18", "--weights", digits_eca_checkpoint,
            "--input-size", str(INPUT_SIZE), "--json"] + FAST
    missing = invoke(base + ["--data", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "data folder not found" in missing.stderr
    fallback = invoke(base)
    assert fallback.exit_code == 0, fallback.output
    data = json.loads(fallback.stdout)["data"]
    assert data["num_images"] == 9 and not data["labeled"] and "sample images" in data["source"]
    assert "no --data: parity is measured on the 9 sample photos" in fallback.stderr
