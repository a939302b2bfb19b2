"""`cli.py attention` end to end on the digits models: figure, JSON, CSV, parity, and one-line user errors."""
import csv
import json
import os

import pytest
from click.testing import CliRunner
from PIL import Image

from cli import cli


@pytest.fixture(scope="module")
def compared(digits_split, digits_eca_checkpoint, digits_se_checkpoint, digits_eca_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("attention")
    result = CliRunner().invoke(cli, [
        "attention", "eca_resnet18", "--weights", digits_eca_checkpoint, "--data", digits_split[1],
        "--compare", "se_resnet18", "--compare-weights", digits_se_checkpoint, "--deployed", digits_eca_onnx,
        "--classes", "1,7,class 9", "--num-images", "200", "--out", str(out), "--json"])
    return result, out


def test_compare_and_parity_payload(compared):
    result, out = compared
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [m["arch"] for m in payload["models"]] == ["se_resnet18", "eca_resnet18"]  # SE on top, as in Figure B
    assert [c["display"] for c in payload["classes"]] == ["class 1", "class 7", "class 9"]
    assert payload["num_images"] == 200 and payload["num_classes"] == 10
    assert all(c["num_images"] == 20 for c in payload["classes"])  # the sample is class-balanced
    for model in payload["models"]:
        assert model["top1_accuracy"] > 0.9
        assert [b["label"] for b in model["blocks"]][-1] == "conv_5_2"
        assert all(0.0 <= b["spread"] < 0.5 for b in model["blocks"])
    parity = payload["parity"]
    assert parity["precision"] == "fp32" and parity["max_abs_diff"] < 1e-5
    assert [b["rank"] for b in parity["blocks"]] == list(range(1, 9))
    assert parity["logits"]["top1_agreement"] == 1.0


def test_files_hold_the_same_numbers(compared):
    result, out = compared
    assert result.exit_code == 0, result.output
    with Image.open(os.path.join(out, "attention.png")) as image:
        assert image.format == "PNG" and image.width > 600
    report = json.load(open(os.path.join(out, "attention.json")))
    eca = report["models"][1]["blocks"][-1]
    with open(os.path.join(out, "attention.csv")) as handle:
        rows = [r for r in csv.DictReader(handle)]
    # 2 models x (16+16+32+32+64+64+128+128 channels) x (3 classes + the average)
    assert len(rows) == 2 * 480 * 4
    csv_weights = [float(r["weight"]) for r in rows if r["model"] == "eca_resnet18" and r["label"] == "conv_5_2"
                   and r["series"] == "class 7"]
    assert csv_weights == pytest.approx(eca["weights"]["class 7"], abs=1e-6)
    with open(os.path.join(out, "attention_parity.csv")) as handle:
        assert len(list(csv.DictReader(handle))) == 8


def test_text_summary(digits_split, digits_eca_checkpoint, tmp_path):
    result = CliRunner().invoke(cli, [
        "attention", "eca_resnet18", "--weights", digits_eca_checkpoint, "--data", digits_split[1],
        "--input-size", "32", "--num-images", "60", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "conv_5_2" in result.output and "spread eca_resnet18" in result.output
    assert "class 0 (6), class 1 (6), class 2 (6), class 3 (6)" in result.output  # default: the first four


@pytest.mark.parametrize("extra, message", [
    (["--classes", "eleven"], "unknown class 'eleven'"),
    (["--classes", "12"], "class index 12 is out of range"),
    (["--compare-weights", "x.pth"], "--compare-weights needs --compare"),
])
def test_user_errors_are_one_line(digits_split, digits_eca_checkpoint, tmp_path, extra, message):
    result = CliRunner().invoke(cli, ["attention", "eca_resnet18", "--weights", digits_eca_checkpoint,
                                      "--data", digits_split[1], "--input-size", "32", "--out", str(tmp_path)] + extra)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_a_non_imagenet_checkpoint_without_an_input_size_is_refused(digits_split, digits_eca_checkpoint, tmp_path):
    """Its 224 px default would give a plot at chance accuracy that looks fine; nothing is written."""
    result = CliRunner().invoke(cli, ["attention", "eca_resnet18", "--weights", digits_eca_checkpoint,
                                      "--data", digits_split[1], "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "has 10 classes" in result.output and "--input-size" in result.output
    assert not (tmp_path / "out").exists()


def test_unlabeled_images_and_wrong_deployed_model_are_refused(digits_split, digits_se_checkpoint,
                                                               digits_eca_onnx, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in sorted(os.listdir(os.path.join(digits_split[1], "3")))[:3]:
        os.link(os.path.join(digits_split[1], "3", name), str(flat / name))
    runner = CliRunner()
    result = runner.invoke(cli, ["attention", "se_resnet18", "--weights", digits_se_checkpoint, "--data", str(flat),
                                 "--input-size", "32", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "need labels" in result.output
    result = runner.invoke(cli, ["attention", "se_resnet18", "--weights", digits_se_checkpoint,
                                 "--data", digits_split[1], "--deployed", digits_eca_onnx, "--out", str(tmp_path)])
    assert result.exit_code == 2 and "the deployed model is eca_resnet18, not se_resnet18" in result.output


def test_an_input_size_other_than_the_deployed_models_is_refused(digits_split, digits_eca_checkpoint,
                                                                 digits_eca_onnx, tmp_path):
    """Without --input-size the deployed model's (32) is used (see `compared`); another one is refused."""
    result = CliRunner().invoke(cli, ["attention", "eca_resnet18", "--weights", digits_eca_checkpoint,
                                      "--data", digits_split[1], "--deployed", digits_eca_onnx, "--input-size", "64",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "error: --input-size 64 differs from the deployed model's input size 32")
