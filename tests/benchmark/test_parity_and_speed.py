"""benchmark-engine as a library, on the digits model: what the artifact says, parity, accuracy, interleaved
timing, checks before timing."""
import numpy as np
import pytest

from benchmark import parity_and_speed, report
from benchmark.parity_and_speed import BenchmarkOptions, benchmark_engine, load_images, load_reference
from deploy.errors import UserError
from deploy.images import sample_images
from deploy.runners.base import TensorMeta
from tests.digits import INPUT_SIZE

FAST = dict(batch_sizes=(1, 4), warmup=0, iterations=2, num_images=48, threads=2, progress=False)


@pytest.fixture(autouse=True)
def _private_image_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ECA_DEPLOY_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def fp32_result(digits_eca_onnx, digits_eca_checkpoint, digits_split):
    """No architecture, input size or classes given: all of them come from the artifact's metadata."""
    return benchmark_engine([digits_eca_onnx], weights=digits_eca_checkpoint, data_dir=digits_split[1],
                            options=BenchmarkOptions(**FAST))


def test_fp32_onnx_matches_pytorch_on_labeled_digits(fp32_result):
    reference, (onnx,) = fp32_result.reference, fp32_result.artifacts
    assert fp32_result.arch == "eca_resnet18" and fp32_result.data["input_size"] == INPUT_SIZE
    assert fp32_result.data["labeled"] and fp32_result.data["num_images"] == 48
    assert reference.top1_accuracy >= 90.0  # a trained model on real images
    assert onnx.top1_agreement == 100.0 and onnx.top5_agreement == 100.0
    assert onnx.max_abs_error < 1e-3 and onnx.cosine_similarity > 0.99999
    assert onnx.top1_accuracy == reference.top1_accuracy and onnx.top1_drop == 0.0
    assert onnx.runner["providers"] == ["CPUExecutionProvider"] and onnx.runner["threads"] == 2


@pytest.fixture
def undisturbed(monkeypatch):
    """Speed-ups given whatever this shared machine did to 2 timed calls (the baseline check has its own test)."""
    monkeypatch.setattr("deploy.runners.execution.DISTURBED_BASELINE", float("inf"))


def test_timings_per_backend_and_batch_size(fp32_result, undisturbed):
    for backend in fp32_result.backends:
        assert [t.batch_size for t in backend.timings] == [1, 4]
        for timing in backend.timings:
            lat = timing.latency
            assert lat["runs"] == 2 and lat["batch_size"] == timing.batch_size and lat["images_per_s"] > 0
            assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
            assert lat["spread"] == pytest.approx(lat["p90_ms"] / lat["p50_ms"])
            assert lat["unstable"] == (lat["spread"] > 1.5)
            assert timing.compute is None  # CPU backends report end-to-end time only
    assert fp32_result.options["interleaved"] and fp32_result.options["reference_precision"] == "fp32"
    assert [t.alone["runs"] for t in fp32_result.reference.timings] == [2, 2]  # PyTorch timed alone too
    assert all(t.alone is None for t in fp32_result.artifacts[0].timings)
    assert sorted(fp32_result.to_dict()["baseline"]) == ["1", "4"]
    assert [t.apart["runs"] for t in fp32_result.artifacts[0].timings] == [2, 2]  # and apart from PyTorch
    ratios = fp32_result.to_dict()["speedups_p50"]["eca_digits.onnx"]
    reference, artifact = fp32_result.reference.timing(4), fp32_result.artifacts[0].timing(4)
    # each side at its own speed: PyTorch alone against the runtime timed without PyTorch between its calls
    assert ratios["4"] == pytest.approx(reference.alone["p50_ms"] / artifact.apart["p50_ms"])
    env = fp32_result.environment
    assert env["threads"] == 2 and env["libraries"]["onnxruntime"] and env["libraries"]["tensorrt"] is None
    assert env["onnxruntime_session"]["threads"] == 2


def test_int8_stays_within_bounds(digits_eca_onnx, digits_eca_checkpoint, digits_split, tmp_path):
    from calibration.api import calibrate

    result = calibrate(digits_eca_onnx, data_dir=digits_split[0], targets=("cpu",), num_images=64, fp16=False,
                       progress=False, output=str(tmp_path / "digits.int8.cpu.onnx"))
    bench = benchmark_engine([result.int8_models["cpu"]], weights=digits_eca_checkpoint, data_dir=digits_split[1],
                             options=BenchmarkOptions(**dict(FAST, num_images=96, batch_sizes=(8,))))
    (int8,) = bench.artifacts
    assert int8.precision.startswith("int8")
    assert int8.top1_agreement >= 95.0 and int8.cosine_similarity > 0.99
    assert int8.top1_drop <= 3.0 and bench.breaches(3.0) == []


def test_mismatches_fail_before_any_timing(digits_eca_onnx, tiny_imagenet_onnx, digits_eca_checkpoint,
                                          monkeypatch, tmp_path):
    def no_timing(*args, **kwargs):
        raise AssertionError("timed before checking the artifacts")

    monkeypatch.setattr(parity_and_speed, "compute_logits", no_timing)
    monkeypatch.setattr(parity_and_speed, "load_images", no_timing)
    options = BenchmarkOptions(**FAST)
    with pytest.raises(UserError, match=r"takes 32x32 input .* set up for 64x64; drop --input-size"):
        benchmark_engine([digits_eca_onnx], weights=digits_eca_checkpoint, input_size=64, options=options)
    with pytest.raises(UserError, match="tiny_eca.onnx has 1000 classes but the reference eca_resnet18 has 10"):
        benchmark_engine([tiny_imagenet_onnx], weights=digits_eca_checkpoint, options=options)
    with pytest.raises(UserError, match="the artifacts disagree on num_classes: eca_digits.onnx has 10, "
                                        "tiny_eca.onnx has 1000"):
        benchmark_engine([digits_eca_onnx, tiny_imagenet_onnx], options=options)
    unknown = tmp_path / "model.bin"
    unknown.write_bytes(b"weights")
    with pytest.raises(UserError, match=r"model.bin: not a model this tool runs; expected an ONNX model \(.onnx\) "
                                        r"or a TensorRT engine \(.engine, .plan, .trt\)"):
        benchmark_engine([str(unknown)], options=options)


def test_weights_that_are_not_the_artifacts_checkpoint_warn_or_fail(digits_eca_onnx, digits_eca_checkpoint,
                                                                     digits_split, tmp_path):
    import onnx

    from exporter.onnx_graph import set_metadata

    model = onnx.load(digits_eca_onnx)
    set_metadata(model, {"checkpoint_sha256": "ab" * 32})
    path = str(tmp_path / "other_weights.onnx")
    onnx.save(model, path)
    with pytest.raises(UserError, match=r"^--weights \(sha256 [0-9a-f]{12}\) is not the checkpoint "
                                        r"other_weights.onnx was exported from \(sha256 abababababab\)$"):
        benchmark_engine([path], weights=digits_eca_checkpoint, options=BenchmarkOptions(strict=True, **FAST))
    result = benchmark_engine([path], weights=digits_eca_checkpoint, data_dir=digits_split[1],
                              options=BenchmarkOptions(**dict(FAST, num_images=8, batch_sizes=(1,))))
    assert result.notes[0].startswith("--weights ") and "other_weights.onnx was exported from" in result.notes[0]
    assert result.notes[0].endswith("; --strict makes this an error")


def test_a_different_preprocessing_is_refused(digits_eca_onnx, digits_eca_checkpoint, tmp_path):
    import onnx

    from exporter.onnx_graph import set_metadata

    model = onnx.load(digits_eca_onnx)
    set_metadata(model, {"resize_size": "40"})  # same crop, other resize: the images would not match
    path = str(tmp_path / "resized.onnx")
    onnx.save(model, path)
    reference = load_reference("eca_resnet18", digits_eca_checkpoint, INPUT_SIZE)
    with pytest.raises(UserError, match=r"resized.onnx expects preprocessing 32x32 \(resize 40, bilinear\).* "
                                        r"the reference uses 32x32 \(resize 37, bilinear\)"):
        parity_and_speed.inspect_artifacts([path], reference)


def test_an_engine_without_tensorrt_is_refused_up_front(tmp_path, digits_eca_checkpoint):
    engine_path = tmp_path / "model.engine"
    engine_path.write_bytes(b"not really an engine")
    reference = load_reference("eca_resnet18", digits_eca_checkpoint, INPUT_SIZE)
    with pytest.raises(UserError, match="TensorRT is not installed"):
        parity_and_speed.inspect_artifacts([str(engine_path)], reference)


def test_sample_images_only_without_data(tmp_path):
    spec = load_reference("resnet18", input_size=64).spec
    images = load_images(None, None, spec, num_images=100, progress=False)
    assert not images.labeled and len(images.array) == len(sample_images()) == 9
    assert images.array.shape[1:] == (3, 64, 64)
    with pytest.raises(UserError, match="data folder not found"):
        load_images(str(tmp_path / "missing"), None, spec, num_images=8, progress=False)


def test_top1_drop():
    ref = parity_and_speed.BackendResult("ref", "", "pytorch", "fp32", {}, top1_accuracy=90.0)
    labeled = parity_and_speed.BackendResult("a", "a.onnx", "onnx", "int8", {}, top1_accuracy=88.5, top1_agreement=97.0)
    unlabeled = parity_and_speed.BackendResult("b", "b.onnx", "onnx", "int8", {}, top1_agreement=97.0)
    assert parity_and_speed.top1_drop(labeled, ref) == pytest.approx(1.5)
    assert parity_and_speed.top1_drop(unlabeled, parity_and_speed.BackendResult("r", "", "pytorch", "fp32", {})) == pytest.approx(3.0)


def test_report_files_markdown_json_csv_png(fp32_result, tmp_path, undisturbed):
    import csv
    import json

    from benchmark.report import write_report

    files = write_report(fp32_result, tmp_path / "report")
    markdown = open(files["markdown"], encoding="utf-8").read()
    assert "| eca_digits.onnx | onnxruntime | fp32 | " in markdown and "p99 ms" in markdown
    assert "p90/p50" in markdown and "vs PyTorch (p50): batch 1: " in markdown
    assert "| pytorch eca_resnet18 (alone) | 1 |" in markdown and "Parity with the PyTorch reference (unseen set, N=48)" \
        in markdown
    assert "CPU: " in markdown and "threads: 2" in markdown
    data = json.load(open(files["json"], encoding="utf-8"))
    assert data["artifacts"][0]["top1_agreement"] == 100.0 and data["environment"]["threads"] == 2
    rows = list(csv.DictReader(open(files["csv"], encoding="utf-8")))
    assert [(r["name"], r["batch_size"]) for r in rows] == [
        ("pytorch eca_resnet18", "1"), ("pytorch eca_resnet18", "4"), ("eca_digits.onnx", "1"),
        ("eca_digits.onnx", "4")]
    assert float(rows[2]["latency_p50_ms"]) > 0 and float(rows[2]["latency_spread"]) >= 1.0
    assert rows[2]["latency_unstable"] in ("True", "False")
    for key in ("latency_plot", "accuracy_plot"):
        with open(files[key], "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "report").iterdir() if p.name.endswith(".part")]


def test_batches_beyond_an_engine_profile_are_skipped_not_failed():
    from deploy.runners.base import BaseRunner

    class ProfiledRunner(BaseRunner):
        """Stands in for TensorRTRunner's interface (TensorRT cannot run here): a profile up to batch 4."""

        compute_times = []

        def activate_impl(self):
            pass

        def deactivate_impl(self):
            pass

        def get_input_metadata(self):
            return {"input": TensorMeta((None, 3, 2, 2), np.dtype(np.float32))}

        def profile(self, name):
            return ((1, 3, 2, 2), (4, 3, 2, 2), (4, 3, 2, 2))

        def infer_impl(self, feed):
            assert len(feed["input"]) <= 4
            self.compute_times.append(1e-4)
            return {"logits": feed["input"].reshape(len(feed["input"]), -1)[:, :5]}

    images = np.random.RandomState(0).rand(10, 3, 2, 2).astype(np.float32)
    result = parity_and_speed.BackendResult("fake", "fake.engine", "engine", "int8", {})
    options = BenchmarkOptions(batch_sizes=(1, 4, 8), warmup=0, iterations=3, progress=False)
    with ProfiledRunner() as runner:
        logits = parity_and_speed.compute_logits(runner, images, options)
        parity_and_speed.time_backends([runner], [result], images, options)
    assert logits.shape == (10, 5)
    np.testing.assert_array_equal(logits, images.reshape(10, -1)[:, :5])
    assert [t.batch_size for t in result.timings] == [1, 4]
    assert result.skipped_batches == {8: "beyond the engine's profile (max batch 4)"}
    assert result.timings[1].compute["p50_ms"] == pytest.approx(0.1)  # compute-only time, in ms
    assert result.timings[1].compute["images_per_s"] == pytest.approx(4 / 1e-4)
    assert result.timings[1].latency["runs"] == 3


def test_backends_take_turns_at_each_batch_size():
    from deploy.runners.base import BaseRunner

    calls = []

    class Recorder(BaseRunner):
        def activate_impl(self):
            pass

        def deactivate_impl(self):
            pass

        def get_input_metadata(self):
            return {"input": TensorMeta(("batch", 3, 2, 2), np.dtype(np.float32))}

        def infer_impl(self, feed):
            calls.append((self.name, len(feed["input"])))
            return {"logits": feed["input"].reshape(len(feed["input"]), -1)}

    images = np.zeros((3, 3, 2, 2), np.float32)
    runners = [Recorder("a"), Recorder("b")]
    results = [parity_and_speed.BackendResult(r.name, "", "onnx", "fp32", {}) for r in runners]
    options = BenchmarkOptions(batch_sizes=(2,), warmup=0, iterations=4, progress=False)
    for runner in runners:
        runner.activate()
    parity_and_speed.time_backends(runners, results, images, options)
    # after one warm-up call each, the reference alone, then the others without it (here "b" alone)
    timed = [name for name, _ in calls[2 + 1 + 4 + 4:]]
    assert calls[:2] == [("a", 2), ("b", 2)] and [name for name, _ in calls[2:7]] == ["a"] * 5
    assert [name for name, _ in calls[7:11]] == ["b"] * 4
    assert timed == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [r.timings[0].latency["runs"] for r in results] == [4, 4]
    assert results[0].timings[0].alone["runs"] == 4 and results[1].timings[0].alone is None
    assert results[1].timings[0].apart["runs"] == 4 and results[0].timings[0].apart is None


def test_a_reference_the_others_slow_down_gets_no_speedup():
    # The first runner stands in for PyTorch: 1 ms alone, 3 ms right after another backend's call (what ONNX
    # Runtime's spinning threads did to it on 2 cores). Its speed-up would be a figure of the machine, not of it.
    import time

    from deploy.runners.base import BaseRunner
    last = []

    class Sleeper(BaseRunner):
        def __init__(self, name, seconds, disturbed_seconds):
            super().__init__(name)
            self.seconds, self.disturbed_seconds = seconds, disturbed_seconds

        def activate_impl(self):
            pass

        def deactivate_impl(self):
            pass

        def get_input_metadata(self):
            return {"input": TensorMeta(("batch", 3, 2, 2), np.dtype(np.float32))}

        def infer_impl(self, feed):
            time.sleep(self.disturbed_seconds if last and last[-1] != self.name else self.seconds)
            last.append(self.name)
            return {"logits": feed["input"].reshape(len(feed["input"]), -1)}

    images = np.zeros((2, 3, 2, 2), np.float32)
    options = BenchmarkOptions(batch_sizes=(1,), warmup=0, iterations=6, progress=False)

    def run(disturbed_seconds):
        runners = [Sleeper("pytorch", 0.001, disturbed_seconds), Sleeper("onnx", 0.0005, 0.0005)]
        results = [parity_and_speed.BackendResult(r.name, "", "onnx", "fp32", {}) for r in runners]
        for runner in runners:
            runner.activate()
        parity_and_speed.time_backends(runners, results, images, options)
        return parity_and_speed.BenchmarkResult("a", "random", results[0], results[1:], {}, {}, {})

    # on a machine this loaded, a slept millisecond can take much longer: the bars below leave it room
    disturbed = run(0.02)
    check = disturbed.reference.timing(1).baseline
    assert check["disturbed"] and check["ratio"] > 1.15 and disturbed.disturbed_batches() == [1]
    assert disturbed.speedups() == {} and disturbed.to_dict()["baseline"]["1"] == check
    assert "no speed-up at batch 1" in "\n".join(report.speedups(disturbed))
    note = parity_and_speed.disturbed_note("pytorch", disturbed.reference.timing(1))
    assert "the baseline is disturbed" in note and "alone" in note
    quiet = run(0.001)
    if not quiet.reference.timing(1).baseline["disturbed"]:  # sleep itself can be late on a busy machine
        assert set(quiet.speedups()["onnx"]) == {1}


def test_short_labels_name_files_and_as_many_folders_as_tell_them_apart():
    assert parity_and_speed.short_labels(["/r/a/eca.onnx", "/r/a/eca.fp16.onnx"]) == ["eca.onnx", "eca.fp16.onnx"]
    assert parity_and_speed.short_labels(["/r/a/m.onnx", "/r/b/m.onnx", "/r/c/m.fp16.onnx"]) == [
        "a/m.onnx", "b/m.onnx", "m.fp16.onnx"]
    assert parity_and_speed.short_labels(["/x/run/m.onnx", "/y/run/m.onnx"]) == ["x/run/m.onnx", "y/run/m.onnx"]
    assert parity_and_speed.short_labels(["/r/m.onnx", "/r/m.onnx"]) == ["m.onnx", "m.onnx (2)"]


def test_same_named_artifacts_from_different_folders_keep_their_own_rows_legends_and_speedups(
        digits_eca_onnx, digits_eca_checkpoint, digits_split, tmp_path, undisturbed):
    import shutil

    from benchmark.report import latency_figure, _pyplot, write_report

    copies = []
    for folder in ("first", "second", "third"):
        (tmp_path / folder).mkdir()
        copies.append(shutil.copy(digits_eca_onnx, str(tmp_path / folder / "eca.int8.tensorrt.onnx")))
    options = BenchmarkOptions(**dict(FAST, batch_sizes=(2,), num_images=8))
    result = benchmark_engine(copies, weights=digits_eca_checkpoint, data_dir=digits_split[1], options=options)
    names = ["first/eca.int8.tensorrt.onnx", "second/eca.int8.tensorrt.onnx", "third/eca.int8.tensorrt.onnx"]
    assert [a.name for a in result.artifacts] == names
    assert sorted(result.to_dict()["speedups_p50"]) == names
    markdown = open(write_report(result, tmp_path / "report")["markdown"], encoding="utf-8").read()
    assert all("| {} | onnxruntime |".format(name) in markdown for name in names)
    assert all("- {} vs PyTorch (p50)".format(name) in markdown for name in names)
    figure = latency_figure(result)
    try:
        legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    finally:
        _pyplot().close(figure)
    assert [label for label in legend if "eca.int8" in label] == names
