"""`cli.py pipeline` on the digits model: every step, the report, and skipping what has not changed."""
import json
import os
import re
import shutil

import pytest
from click.testing import CliRunner

from pipeline.bench import goal_lines
from cli import cli
from tests.digits import INPUT_SIZE

STEPS = ["export", "fp16", "int8", "engines", "benchmark", "report"]


@pytest.fixture(autouse=True)
def _private_image_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ECA_DEPLOY_CACHE", str(tmp_path / "cache"))


def _copy_digits(source, root, per_class):
    for label in sorted(os.listdir(source)):
        os.makedirs(root / label)
        for name in sorted(os.listdir(os.path.join(source, label)))[:per_class]:
            shutil.copy(os.path.join(source, label, name), root / label / name)
    return str(root)


@pytest.fixture
def small_data(digits_split, tmp_path):
    """Six validation digits per class, copied so the test may change them."""
    return _copy_digits(digits_split[1], tmp_path / "data", 6)


def run(args):
    result = CliRunner().invoke(cli, ["pipeline"] + args + ["--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    return payload, {s["name"]: s for s in payload["steps"]}, result.stderr


def test_pipeline_runs_reports_and_skips_what_is_unchanged(digits_eca_checkpoint, small_data, tmp_path, monkeypatch):
    # speed-ups are given whatever this shared machine did to one timed call (tests/benchmark has the baseline check)
    monkeypatch.setattr("deploy.runners.execution.DISTURBED_BASELINE", float("inf"))
    out = str(tmp_path / "out")
    args = ["eca_resnet18", "--weights", digits_eca_checkpoint, "--input-size", str(INPUT_SIZE), "--data",
            small_data, "--out", out, "--batch-sizes", "2", "--iterations", "1", "--warmup", "0", "--threads", "2"]

    payload, steps, stderr = run(args)
    assert list(steps) == STEPS
    assert [steps[s]["status"] for s in STEPS] == ["ran", "ran", "ran", "unavailable", "ran", "ran"]
    assert "TensorRT is not installed" in steps["engines"]["reason"]
    assert "[4/6] engines: unavailable" in stderr and not payload["random_weights"]
    assert ("note: --data {} split deterministically (seed 0, stratified by class): 30 images calibrate, 30 held-out "
            "images evaluate".format(small_data)) in stderr
    # the evaluation half splits again: 15 images judge the calibration (auto's choice), 15 measure every figure, so
    # all 30 calibration images feed the ranges and nothing reported comes from the images that chose the model
    assert ("note: the 30 evaluation images split deterministically (seed 0, stratified by class): 15 judge the "
            "calibration, 15 measure every reported figure") in stderr
    assert steps["int8"]["summary"]["num_images"] == 30
    assert steps["int8"]["summary"]["judged_on"] == "on 15 judging images (they chose it; unseen images measure it)"
    markdown = open(payload["report"]["markdown"], encoding="utf-8").read()
    # What was measured comes first (parity, then speed, each with its plot); what was not, at the end.
    headings = [line for line in markdown.splitlines() if line.startswith("## ")]
    # every figure names its image set: the 15 unseen images, never the 15 that judged
    assert headings[:2] == ["## Parity with the PyTorch reference (unseen set, N=15)",
                            "## Throughput and latency (end to end)"]
    assert headings[-1] == "## Not measured in this run" and "eca-deploy pipeline --baselines" in markdown
    assert "![Accuracy against throughput](benchmark/benchmark_accuracy_throughput.png)" in markdown
    assert "![Latency against batch size](benchmark/benchmark_latency.png)" in markdown.split(
        "## Throughput and latency", 1)[1].split("\n## ", 1)[0]  # speed under its own heading
    report = json.load(open(payload["report"]["json"], encoding="utf-8"))
    assert sorted(report["artifacts"]) == ["fp16", "fp32", "int8_cpu", "int8_tensorrt"]
    assert report["benchmark"]["data"]["num_images"] == 15 and report["benchmark"]["data"]["labeled"]
    parity = {a["precision"]: a for a in report["benchmark"]["artifacts"]}
    assert parity["fp32"]["top1_agreement"] == 100.0 and parity["fp16"]["top1_agreement"] == 100.0
    assert report["benchmark"]["reference"]["top1_accuracy"] >= 80.0  # trained weights, held-out images
    assert parity["int8 (cpu)"]["top1_drop"] <= 7.0 and parity["int8 (tensorrt)"]["top1_drop"] <= 7.0
    for key in ("latency_plot", "accuracy_plot"):
        assert os.path.getsize(payload["report"][key]) > 1000
    # `make demo` puts the parity of one such run and the speed of another into one report, in that order.
    from data.digits import DigitsModel
    from demo.run import demo_markdown
    demo = demo_markdown(DigitsModel(digits_eca_checkpoint, small_data, small_data, 9.5), markdown, markdown,
                         report["benchmark"]["data"]["num_images"])
    assert "its calibration judged on 45 held-out images, and scored against the real labels of 15 other" in demo
    demo_headings = [line for line in demo.splitlines() if line.startswith("## ")]
    assert [h.split(":")[0] for h in demo_headings] == ["## Accuracy", "## Speed", "## Not measured in this run",
                                                        "## Full reports"]
    assert "(digits/benchmark/benchmark_accuracy_throughput.png)" in demo and "**random weights**" in demo
    # What the README says of the demo's report: both plots embedded, speed and its ratios under the speed heading.
    speed = demo.split("\n## Speed", 1)[1].split("\n## ", 1)[0]
    assert "![Latency against batch size](eca_resnet50/benchmark/benchmark_latency.png)" in speed
    assert " vs PyTorch (p50): batch 2: " in speed and "## INT8 calibration" not in demo
    assert "| eca_resnet18.int8.tensorrt.onnx | onnxruntime | int8 (tensorrt) |" in demo
    baseline, *goals = goal_lines(report, 2)  # what `make bench` prints, from the same report
    assert re.sub(r"[\d.]+", "N", baseline) == ("PyTorch eager pN: N ms alone, N ms in turns with the other "
                                                "backends (Nx)")
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
    assert steps["int8"]["reason"] == "input changed: data, judges"

    os.remove(steps["fp16"]["outputs"]["fp16"])
    _, steps, _ = run(args)
    assert steps["fp16"]["status"] == "ran" and steps["fp16"]["reason"] == "output missing: fp16"
    assert steps["export"]["status"] == steps["int8"]["status"] == "skipped"

    _, steps, _ = run(args + ["--force"])
    assert [steps[s]["status"] for s in STEPS] == ["ran"] * 3 + ["unavailable"] + ["ran"] * 2


def test_separate_calibration_and_evaluation_data_trt_version_and_bundle(digits_eca_checkpoint, digits_split,
                                                                         tmp_path):
    import tarfile

    calib = _copy_digits(digits_split[0], tmp_path / "calib", 2)
    evaluate = _copy_digits(digits_split[1], tmp_path / "eval", 3)
    out, bundle = tmp_path / "out", tmp_path / "eca_digits.tar.gz"
    payload, steps, stderr = run(["eca_resnet18", "--weights", digits_eca_checkpoint, "--input-size",
                                  str(INPUT_SIZE), "--calib-data", calib, "--eval-data", evaluate, "--out", str(out),
                                  "--batch-sizes", "2", "--iterations", "1", "--warmup", "0", "--threads", "2",
                                  "--trt-version", "10.3", "--bundle", str(bundle)])
    assert "--data" not in stderr and steps["int8"]["summary"]["num_images"] == 20  # judged on 15 eval images
    assert open(out / "eca_resnet18.calib.cache").readline().startswith("TRT-100300-")
    assert steps["bundle"]["status"] == "ran" and payload["report"]["bundle"] == str(bundle)
    with tarfile.open(bundle) as tar:
        names = {os.path.relpath(n, "eca_digits") for n in tar.getnames()}
    assert {"eca_resnet18.onnx", "eca_resnet18.fp16.onnx", "eca_resnet18.int8.tensorrt.onnx",
            "eca_resnet18.calib.cache", "build_engines.sh", "deploy/infer.py"} <= names
    assert "eca_resnet18.int8.cpu.onnx" not in names  # the CPU-target model is for ONNX Runtime on x86
    # the proof travels: PyTorch's logits on the 15 images every figure was measured on, and the class names
    assert {"reference.npz", "labels.txt", "eca-deploy-bundle.json"} <= names
    assert steps["bundle"]["summary"]["reference_images"] == 15
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path / "device")
    from tests.blocking import run_blocked
    proc = run_blocked(["-m", "deploy.check", "--json"], str(tmp_path), ["torch", "models", "calibration"],
                       cwd=str(tmp_path / "device" / "eca_digits"))
    assert proc.returncode == 0, proc.stderr
    checked = json.loads(proc.stdout)
    assert checked["passed"] and checked["reference"]["images"] == 15
    parity = {a["name"]: a["top1_agreement"] for a in json.load(open(
        payload["report"]["json"], encoding="utf-8"))["benchmark"]["artifacts"]}
    for artifact in checked["artifacts"]:  # one model, one image set: one figure in every command
        assert artifact["top1_agreement"] == pytest.approx(parity[artifact["name"]])


@pytest.mark.parametrize("args, message", [
    (["--data", "{tmp}"], "error: data folder not found: {tmp}/nowhere"),
    (["--calib-data", "{tmp}"], "error: --calib-data and --eval-data go together (or give one --data to split)"),
    (["--data", "{tmp}", "--eval-data", "{tmp}"], "error: give either --data (split into calibration and evaluation "
                                                  "images) or --calib-data and --eval-data, not both"),
    (["--trt-version", "banana"], "error: "),
])
def test_data_and_version_errors_are_one_line(tmp_path, args, message):
    args = [a.format(tmp=tmp_path / "nowhere") if a == "{tmp}" else a for a in args]
    if "--data" in args and "--eval-data" in args:
        args = [str(tmp_path) if a == str(tmp_path / "nowhere") else a for a in args]
    result = CliRunner().invoke(cli, ["pipeline"] + args + ["--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith(message.format(tmp=tmp_path)) and "Traceback" not in result.output
    assert not os.path.exists(tmp_path / "out" / "pipeline_state.json")


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
