"""deploy.bench: trtexec's figures, torch-free, on a tiny real model (ONNX Runtime here; TensorRT where a GPU is).

The bundle is a real one (`bundling.bundle` of the tiny 1000-class model), timed with `python -m deploy.bench` run
inside it with torch blocked, as on a Jetson. The TensorRT rows (GPU compute time between CUDA events) need a GPU
and skip with the reason elsewhere.
"""
import json
import os
import stat
import subprocess

import pytest

from deploy import bench
from deploy.metadata import read_model_info
from deploy.runners.execution import DEFAULT_BATCH_SIZES
from tests.blocking import attempts_from_project, blocked_env, run_blocked

BLOCKED = ["torch", "torchvision", "click", "tqdm", "models", "exporter", "calibration", "benchmark"]
PERCENTILE_ORDER = ("min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
# JetPack 5's Python with the wheels that bring ONNX Runtime to it, made by `make jetpack-stacks` (tools/).
PY38 = os.environ.get("ECA_PY38_PYTHON", os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), ".venv-jetpack", "jetpack5-onnxruntime", "bin", "python"))


@pytest.fixture(scope="module")
def tiny_bundle(tiny_imagenet_onnx, tmp_path_factory):
    from bundling.bundle import bundle
    return bundle([tiny_imagenet_onnx], tmp_path_factory.mktemp("bench") / "bundle").output


def run_bench(capsys, *argv):
    assert bench.main(list(argv) + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def assert_consistent(row, runs=None):
    latency = row["latency"]
    values = [latency[key] for key in PERCENTILE_ORDER]
    assert values == sorted(values) and values[0] > 0, latency
    assert latency["min_ms"] <= latency["mean_ms"] <= latency["max_ms"]
    assert row["throughput_images_per_s"] == pytest.approx(1000.0 * row["batch_size"] / latency["mean_ms"])
    assert latency["batch_size"] == row["batch_size"] and row["skipped"] is None
    if runs is not None:
        assert latency["runs"] == runs


def test_bundle_timed_torch_free_from_inside(tiny_bundle, tmp_path):
    proc = run_blocked(["-m", "deploy.bench", "--json", "--batch-sizes", "1,2", "--iterations", "7",
                        "--warm-up", "0"], str(tmp_path), BLOCKED, cwd=tiny_bundle)
    assert proc.returncode == 0, proc.stderr
    assert attempts_from_project(proc.stderr, tiny_bundle) == []
    report = json.loads(proc.stdout)
    rows = report["results"]
    assert [(r["model"], r["batch_size"]) for r in rows] == [("tiny_eca.onnx", 1), ("tiny_eca.onnx", 2)]
    for row in rows:
        assert_consistent(row, runs=7)
        assert row["kind"] == "onnx" and row["precision"] == "fp32" and row["warm_up_runs"] == 1
        assert row["gpu_compute"] is None and row["runner"]["providers"] == ["CPUExecutionProvider"]
        assert sorted(row["latency"]) == ["batch_size", "images_per_s", "max_ms", "mean_ms", "min_ms", "p50_ms",
                                          "p90_ms", "p95_ms", "p99_ms", "runs", "spread", "unstable"]
    settings = report["settings"]
    assert settings["iterations"] == 7 and settings["duration_s"] is None and settings["batch_sizes"] == [1, 2]
    env = report["environment"]
    assert env["runtimes"]["onnxruntime"] and "tensorrt" not in env["runtimes"]
    from deploy.jetson import is_jetson
    if not is_jetson():
        assert env["jetson"] == "not a Jetson"


def test_duration_warm_up_and_markdown(tiny_imagenet_onnx, tmp_path, capsys):
    table = tmp_path / "out" / "bench.md"
    report = run_bench(capsys, tiny_imagenet_onnx, "--duration", "0.2", "--warm-up", "50", "--threads", "1",
                       "--markdown", str(table))
    # the default batch sizes are the ones benchmark-engine and pipeline time (deploy.runners.execution)
    assert [r["batch_size"] for r in report["results"]] == list(DEFAULT_BATCH_SIZES)
    row = report["results"][0]
    assert_consistent(row)
    assert row["latency"]["runs"] >= bench.MIN_DURATION_RUNS and row["wall_s"] >= 0.2
    assert row["warm_up_runs"] >= 1 and row["runner"]["threads"] == 1
    assert report["settings"]["duration_s"] == 0.2 and report["settings"]["warm_up_ms"] == 50
    text = table.read_text()
    assert text == bench.format_markdown(report)
    assert "| model | runner | precision | batch | images/s | mean ms | min ms | p50 ms" in text
    assert "| tiny_eca.onnx | onnxruntime CPU | fp32 | 1 | {:.1f} |".format(row["throughput_images_per_s"]) in text
    assert "deploy.check" in text and "warm-up 50 ms, then 0.2 s per row" in text
    assert bench.main([tiny_imagenet_onnx, "--iterations", "3"]) == 0  # the table on stdout without --json
    assert capsys.readouterr().out.startswith("device: ")


def test_static_batch_and_folders(tiny_imagenet_onnx, tmp_path, capsys):
    """A static-batch model is timed at its own batch; the other sizes are skipped with the reason."""
    import onnx
    model = onnx.load(tiny_imagenet_onnx)
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 2
    folder = tmp_path / "models"
    folder.mkdir()
    onnx.save(model, str(folder / "static2.onnx"))
    report = run_bench(capsys, str(folder), "--batch-sizes", "1,2,8", "--iterations", "4", "--warm-up", "0")
    rows = {r["batch_size"]: r for r in report["results"]}
    assert_consistent(rows[2], runs=4)
    assert rows[1]["skipped"] == rows[8]["skipped"] == "the model has a static batch of 2"
    assert rows[1]["latency"] is None


def test_gpu_compute_clock_is_reported_apart(tiny_imagenet_onnx, monkeypatch, capsys):
    """The reporting path of a second clock, without a GPU: a runner that, like TensorRTRunner, fills
    ``compute_times`` (here the time of ONNX Runtime's run call alone). The CUDA events themselves are tested
    below on a GPU; tests/fake_tensorrt.py builds engines but cannot run one."""
    from deploy.runners import OnnxRuntimeRunner

    class ComputeClockRunner(OnnxRuntimeRunner):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.compute_times = []

        def infer_impl(self, feed_dict):
            import time
            start = time.perf_counter()
            outputs = super().infer_impl(feed_dict)
            self.compute_times.append(time.perf_counter() - start)
            return outputs

    monkeypatch.setattr(bench, "open_runner", lambda path, options: (ComputeClockRunner(path), None))
    report = run_bench(capsys, tiny_imagenet_onnx, "--iterations", "5", "--warm-up", "0", "--batch-sizes", "1")
    (row,) = report["results"]
    assert row["gpu_compute"]["runs"] == row["latency"]["runs"] == 5
    assert row["gpu_compute"]["mean_ms"] <= row["latency"]["mean_ms"]
    line = [l for l in bench.format_markdown(report).splitlines() if l.startswith("| tiny_eca.onnx")][0]
    assert line.endswith("| {:.3f} | {:.3f} |".format(row["gpu_compute"]["mean_ms"], row["gpu_compute"]["p99_ms"]))


def test_engine_without_tensorrt_is_skipped(tiny_imagenet_onnx, tmp_path, monkeypatch, capsys):
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(b"plan")
    (tmp_path / "tiny.engine.json").write_text(json.dumps(
        {"metadata": read_model_info(tiny_imagenet_onnx).to_metadata(), "precision": "fp16"}))
    monkeypatch.setattr(bench, "_importable", lambda name: name != "tensorrt")
    report = run_bench(capsys, tiny_imagenet_onnx, str(engine), "--iterations", "2", "--warm-up", "0")
    skipped = report["results"][-1]
    assert (skipped["model"], skipped["kind"], skipped["precision"]) == ("tiny.engine", "engine", "fp16")
    assert skipped["skipped"] == "tensorrt is not importable here (engines run where TensorRT is installed)"
    assert bench.main([str(engine)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: nothing could be timed here: tiny.engine: tensorrt is not importable here (engines run "
                   "where TensorRT is installed)"]


@pytest.mark.parametrize("argv,message", [
    (["--batch-sizes", "0"], "--batch-sizes must be at least 1, got 0"),
    (["--batch-sizes", "1,x"], "--batch-sizes must be an integer, got 'x'"),
    (["--batch-sizes", "5000"], "--batch-sizes 5000 is above the limit of 4096"),
    (["--batch-sizes", ",".join(str(i) for i in range(1, 18))], "--batch-sizes takes at most 16 sizes, got 17"),
    (["--iterations", "0"], "--iterations must be at least 1, got 0"),
    (["--iterations", "100001"], "--iterations 100001 is above the limit of 100000"),
    (["--duration", "0"], "--duration must be at least 0.01, got 0"),
    (["--duration", "nan"], "--duration must be a finite number, got nan"),
    (["--duration", "601"], "--duration must be at most 600, got 601"),
    (["--warm-up", "-1"], "--warm-up must be at least 0, got -1"),
    (["--threads", "x"], "--threads must be an integer, got 'x'"),
    (["--providers", "bogus"], "nothing could be timed here: tiny_eca.onnx: it did not load: unknown ONNX Runtime "
                               "provider bogus; use cpu, cuda, tensorrt, trt or a full name such as "
                               "CUDAExecutionProvider"),
])
def test_bad_options_are_one_line(tiny_imagenet_onnx, capsys, argv, message):
    assert bench.main([tiny_imagenet_onnx] + argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: " + message]


def test_threads_are_bounded_per_core(tiny_imagenet_onnx, capsys):
    from deploy.validate import max_threads
    assert bench.main([tiny_imagenet_onnx, "--threads", str(max_threads() + 1)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --threads {} is above the limit of {}".format(
        max_threads() + 1, max_threads()))


def test_bad_paths_are_one_line(tiny_imagenet_onnx, tmp_path, monkeypatch, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\n")
    cases = [([str(tmp_path / "missing.onnx")], "no such model or engine: "),
             ([str(labels)], "not a model this tool runs"),
             ([str(tmp_path)], "holds no ONNX models or TensorRT engines"),
             ([], "give ONNX models or TensorRT engines, or run it inside an unpacked bundle"),
             ([tiny_imagenet_onnx, "--markdown", str(tmp_path)], "is a folder; give a file path"),
             ([tiny_imagenet_onnx, "--markdown", tiny_imagenet_onnx], "would overwrite the input")]
    monkeypatch.chdir(tmp_path)
    for argv, message in cases:
        assert bench.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage error for the exclusive pair
        bench.main([tiny_imagenet_onnx, "--duration", "1", "--iterations", "5"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_help_states_the_bounds_and_the_gate(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0 and "usage: python3 -m deploy.bench" in out
    for text in ("each 1 to 4096", "0 to 60000 ms (default 200)", "0.01 to 600 s (default 3)", "1 to 100000",
                 "at most 4 per core", "deploy.check` is the correctness gate"):
        assert text in out


# -- the device: Jetson power mode and clocks, only read ----------------------------------------------------------

def _tool(folder, name, output, log):
    path = folder / name
    path.write_text("#!/bin/sh\necho \"{} $*\" >> {}\nprintf '{}'\n".format(name, log, output))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_jetson_mode_and_clocks_are_read_never_set(tmp_path, monkeypatch):
    from deploy import jetson
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    _tool(bin_dir, "nvpmodel", "NV Power Mode: 15W\\n2\\n", log)
    _tool(bin_dir, "jetson_clocks", "SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin\\nOnline CPUs: 0-1\\n"
          "cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600\\n"
          "cpu1: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600\\n"
          "GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000\\n"
          "EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1\\n", log)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])
    monkeypatch.setattr(jetson, "is_jetson", lambda *a, **k: True)
    monkeypatch.setattr(jetson, "device_model", lambda *a, **k: "NVIDIA Jetson AGX Orin")
    env = bench.environment()
    assert env["jetson"]["power_mode"] == {"name": "15W", "id": 2}
    assert env["jetson"]["jetson_clocks"] == {"on": True, "source": "jetson_clocks --show"}
    assert log.read_text().splitlines() == ["nvpmodel -q", "jetson_clocks --show"]  # asked, never told
    assert bench.describe_device(env) == "NVIDIA Jetson AGX Orin, nvpmodel 15W (2), jetson_clocks on"


def test_jetson_clocks_from_the_tool_or_the_clock_files(tmp_path):
    from deploy.jetson import clocks_pinned_in_sysfs, parse_jetson_clocks
    scaled = "cpu0: Online=1 Governor=schedutil MinFreq=115200 MaxFreq=2201600 CurrentFreq=729600\n" \
             "GPU MinFreq=306000000 MaxFreq=1300500000 CurrentFreq=306000000\n"
    assert parse_jetson_clocks(scaled) is False
    assert parse_jetson_clocks("cpu0: Gonvernor=interactive MinFreq=1734000 MaxFreq=1734000 CurrentFreq=1734000\n"
                               "GPU MinFreq=998400000 MaxFreq=998400000 CurrentFreq=998400000\n") is True
    assert parse_jetson_clocks("Error: run as root\n") is None
    sysfs = tmp_path / "sys"
    assert clocks_pinned_in_sysfs(str(sysfs)) is None
    for folder, low, high in (("devices/system/cpu/cpu0/cpufreq", "scaling_min_freq", "scaling_max_freq"),
                              ("class/devfreq/17000000.ga10b", "min_freq", "max_freq")):
        (sysfs / folder).mkdir(parents=True)
        (sysfs / folder / low).write_text("1300500000\n")
        (sysfs / folder / high).write_text("1300500000\n")
    assert clocks_pinned_in_sysfs(str(sysfs)) is True
    (sysfs / "class/devfreq/17000000.ga10b/min_freq").write_text("306000000\n")
    assert clocks_pinned_in_sysfs(str(sysfs)) is False


# -- other interpreters and the GPU ------------------------------------------------------------------------------

def _py38_missing_reason():
    if not os.path.isfile(PY38):
        return "no Python 3.8 at {} (set ECA_PY38_PYTHON)".format(PY38)
    probe = subprocess.run([PY38, "-c", "import numpy, PIL, onnxruntime"], capture_output=True, text=True)
    if probe.returncode != 0:
        return "{} lacks numpy, Pillow or onnxruntime (set ECA_PY38_PYTHON to one that has them)".format(PY38)
    return None


def test_python38_times_the_bundle(tiny_bundle, tmp_path):
    reason = _py38_missing_reason()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run([PY38, "-m", "deploy.bench", "--json", "--iterations", "3", "--warm-up", "0"],
                          cwd=tiny_bundle, env=blocked_env(str(tmp_path), BLOCKED, tiny_bundle), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["environment"]["python"].startswith("3.8.")
    assert_consistent(report["results"][0], runs=3)


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [False, True], ids=["plain", "cuda-graph"])
def test_engine_gpu_compute_time(tiny_imagenet_onnx, tmp_path, capsys, cuda_graph):
    """Needs TensorRT and a GPU: the engine's GPU compute time (CUDA events around the execution) apart from
    the end-to-end time, and the batch sizes outside its profile skipped."""
    from deploy.trt.build import BuildOptions, build_engine
    engine = build_engine(tiny_imagenet_onnx, str(tmp_path / "tiny.engine"),
                          BuildOptions(min_batch=1, opt_batch=2, max_batch=4)).engine_path
    report = run_bench(capsys, engine, "--batch-sizes", "1,4,8", "--iterations", "20", "--warm-up", "20",
                       *(["--cuda-graph"] if cuda_graph else []))
    rows = {r["batch_size"]: r for r in report["results"]}
    assert rows[8]["skipped"] == "outside the engine's profile (batch 1 to 4)"
    for size in (1, 4):
        row = rows[size]
        assert_consistent(row, runs=20)
        compute = row["gpu_compute"]
        assert compute["runs"] == 20 and 0 < compute["p50_ms"] <= row["latency"]["p50_ms"]
        assert row["runner"]["gpu_compute_timing"] and row["runner"]["cuda_graph"] == cuda_graph
    assert report["environment"]["runtimes"]["tensorrt"]
