"""`cli.py pipeline` on the digits model: every step, the report, and skipping what has not changed."""
import json
import os
import re
import shutil

import pytest
from click.testing import CliRunner

from benchmark.__main__ import goal_lines
from cli import cli
from tests.digits import INPUT_SIZE

STEPS = ["export", "fp16", "int8", "engines", "benchmark", "report"]


@pytest.fixture(autouse=True)
def _private_image_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ECA_DEPLOY_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def small_data(digits_split, tmp_path):
    """Four validation digits per class, copied so the test may change them."""
    root = tmp_path / "data"
    for label in sorted(os.listdir(digits_split[1])):
        os.makedirs(root / label)
        for name in sorted(os.listdir(os.path.join(digits_split[1], label)))[:4]:
            shutil.copy(os.path.join(digits_split[1], label, name), root / label / name)
    return str(root)


def run(args):
    result = CliRunner().invoke(cli, ["pipeline"] + args + ["--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    return payload, {s["name"]: s for s in payload["steps"]}, result.stderr


def test_pipeline_runs_reports_and_skips_what_is_unchanged(digits_eca_checkpoint, small_data, tmp_path):
    out = str(tmp_path / "out")
    args = ["eca_resnet18", "--weights", digits_eca_checkpoint, "--input-size", str(INPUT_SIZE), "--data",
            small_data, "--out", out, "--batch-sizes", "2", "--iterations", "1", "--warmup", "0", "--threads", "2"]

    payload, steps, stderr = run(args)
    assert list(steps) == STEPS
    assert [steps[s]["status"] for s in STEPS] == ["ran", "ran", "ran", "unavailable", "ran", "ran"]
    assert "TensorRT is not installed" in steps["engines"]["reason"]
    assert "[4/6] engines: unavailable" in stderr and not payload["random_weights"]
    markdown = open(payload["report"]["markdown"], encoding="utf-8").read()
    assert [line for line in markdown.splitlines() if line.startswith("## ")][0] == "## Table A, deployed"
    assert "cli.py pipeline --table-a" in markdown and "| ECA-Net | R-34 | 20.788M | 3.428 |" in markdown
    report = json.load(open(payload["report"]["json"], encoding="utf-8"))
    assert sorted(report["artifacts"]) == ["fp16", "fp32", "int8_cpu", "int8_tensorrt"]
    parity = {a["precision"]: a for a in report["benchmark"]["artifacts"]}
    assert parity["fp32"]["top1_agreement"] == 100.0 and parity["fp16"]["top1_agreement"] == 100.0
    assert parity["int8 (cpu)"]["top1_drop"] <= 5.0 and parity["int8 (tensorrt)"]["top1_drop"] <= 5.0
    for key in ("latency_plot", "accuracy_plot"):
        assert os.path.getsize(payload["report"][key]) > 1000
    goals = goal_lines(report, 2)  # what `python -m benchmark` prints, from the same report
    assert [re.sub(r"[\d.]+", "N", g.split(" (")[0]) for g in goals] == [
        "ORT FPN / PyTorch eager: Nx", "CPU INTN / ORT FPN: Nx"]
    assert all(g.endswith(": met)") or g.endswith(": NOT met)") for g in goals)

    _, steps, _ = run(args)
    assert [steps[s]["status"] for s in STEPS] == ["skipped"] * 3 + ["unavailable"] + ["skipped"] * 2

    _, steps, _ = run(args[:-6] + ["--iterations", "2", "--warmup", "0", "--threads", "2"])
    assert [s for s in STEPS if steps[s]["status"] == "ran"] == ["benchmark", "report"]
    assert steps["benchmark"]["reason"] == "option changed: iterations"

    os.remove(os.path.join(small_data, "0", sorted(os.listdir(os.path.join(small_data, "0")))[0]))
    _, steps, _ = run(args)
    assert [s for s in STEPS if steps[s]["status"] == "ran"] == ["int8", "benchmark", "report"]
    assert steps["int8"]["reason"] == "input changed: data"

    os.remove(steps["fp16"]["outputs"]["fp16"])
    _, steps, _ = run(args)
    assert steps["fp16"]["status"] == "ran" and steps["fp16"]["reason"] == "output missing: fp16"
    assert steps["export"]["status"] == steps["int8"]["status"] == "skipped"

    _, steps, _ = run(args + ["--force"])
    assert [steps[s]["status"] for s in STEPS] == ["ran"] * 3 + ["unavailable"] + ["ran"] * 2


def test_missing_data_folder_is_an_error(tmp_path):
    result = CliRunner().invoke(cli, ["pipeline", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: data folder not found: {}".format(tmp_path / "nowhere")


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_pipeline_builds_and_benchmarks_engines(digits_eca_checkpoint, small_data, tmp_path):
    payload, steps, _ = run(["eca_resnet18", "--weights", digits_eca_checkpoint, "--input-size", str(INPUT_SIZE),
                             "--data", small_data, "--out", str(tmp_path / "out"), "--batch-sizes", "1,4",
                             "--iterations", "2", "--warmup", "0"])
    assert steps["engines"]["status"] == "ran"
    assert sorted(steps["engines"]["outputs"]) == ["engine_fp16", "engine_int8_tensorrt"]
    report = json.load(open(payload["report"]["json"], encoding="utf-8"))
    engines = [a for a in report["benchmark"]["artifacts"] if a["kind"] == "engine"]
    assert len(engines) == 2
    for entry in engines:
        assert entry["top1_agreement"] >= 95.0
        assert all(t["compute"] and t["compute"]["p50_ms"] > 0 for t in entry["timings"])
