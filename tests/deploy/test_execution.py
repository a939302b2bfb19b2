"""The execution core: artifact kinds, the fixed-batch rule, padding, batched inference, interleaved timing and
the latency record, on small stand-in runners and on a real ONNX model."""
import numpy as np
import pytest

from deploy.errors import UserError
from deploy.runners import OnnxRuntimeRunner
from deploy.runners.base import BaseRunner, TensorMeta
from deploy.runners.execution import (UNSTABLE_SPREAD, artifact_kind, fixed_batch_from_shape, fixed_batch_size,
                                      infer_all, input_size_of, latency_record, pad_batch, time_interleaved)


class Doubler(BaseRunner):
    """Logits = twice the first three pixels; records the batch of every call, optionally a fixed batch."""

    def __init__(self, name="doubler", batch=None, input_dtype=np.float32):
        super().__init__(name)
        self.batch, self.input_dtype, self.calls = batch, np.dtype(input_dtype), []

    def activate_impl(self):
        pass

    def deactivate_impl(self):
        pass

    def get_input_metadata(self):
        return {"input": TensorMeta((self.batch or "batch", 3, 2, 2), self.input_dtype)}

    def get_output_metadata(self):
        return {"logits": TensorMeta((self.batch or "batch", 3), np.dtype(np.float32))}

    def infer_impl(self, feed):
        x = feed["input"]
        assert x.dtype == self.input_dtype
        if self.batch:
            assert len(x) == self.batch
        self.calls.append((self.name, len(x)))
        return {"logits": x.reshape(len(x), -1)[:, :3].astype(np.float32) * 2}


def test_artifact_kinds_come_from_the_file_name_and_unknown_files_are_errors():
    assert artifact_kind("m.onnx") == "onnx" and artifact_kind("M.ONNX") == "onnx"
    assert artifact_kind("m.engine") == artifact_kind("m.plan") == artifact_kind("m.trt") == "engine"
    with pytest.raises(UserError, match=r"model.pth: not a model this tool runs"):
        artifact_kind("model.pth")


@pytest.mark.parametrize("shape, fixed", [
    ((4, 3, 32, 32), 4), (("batch", 3, 32, 32), None), ((None, 3, 32, 32), None), ((-1, 3, 32, 32), None),
    ((0, 3, 32, 32), None), ((), None), (None, None), ((np.int64(2), 3), 2)])
def test_one_fixed_batch_rule(shape, fixed):
    assert fixed_batch_from_shape(shape) == fixed


def test_padding_cycles_through_the_real_images():
    rows = np.arange(3)[:, None] * np.ones((3, 2))
    np.testing.assert_array_equal(pad_batch(rows, 7)[:, 0], [0, 1, 2, 0, 1, 2, 0])
    assert pad_batch(rows, 3) is not None and len(pad_batch(rows, 3)) == 3
    with pytest.raises(UserError):
        pad_batch(rows[:0], 2)


def test_fixed_batch_models_get_padded_chunks_trimmed_back():
    images = np.arange(6 * 12, dtype=np.float32).reshape(6, 3, 2, 2)
    with Doubler(batch=4) as runner:
        assert fixed_batch_size(runner) == 4
        logits = infer_all(runner, images, batch_size=8)["logits"]
    assert runner.calls == [("doubler", 4), ("doubler", 4)]
    np.testing.assert_array_equal(logits, images.reshape(6, -1)[:, :3] * 2)


def test_inputs_are_cast_to_the_models_input_type():
    images = np.random.RandomState(0).rand(5, 3, 2, 2).astype(np.float32)
    with Doubler(input_dtype=np.float16) as runner:
        logits = infer_all(runner, images, batch_size=2)["logits"]
    assert [n for _, n in runner.calls] == [2, 2, 1]
    np.testing.assert_allclose(logits, images.reshape(5, -1)[:, :3] * 2, rtol=1e-3)


def test_runners_take_turns_and_keep_their_own_clocks():
    a, b = Doubler("a"), Doubler("b")
    x = np.zeros((2, 3, 2, 2), np.float32)
    with a, b:
        clocks = time_interleaved([a, b], [x, x], iterations=3, warmup=1, per_turn=2)
    assert len(a.calls) == len(b.calls) == 1 + 3 * 2
    assert [len(wall) for wall, _ in clocks] == [6, 6] and [compute for _, compute in clocks] == [[], []]
    assert len(a.inference_times) == 7  # the warm-up call stays in the runner's clock, outside the timing


def test_turn_order_reverses_each_round():
    calls = []

    class Named(Doubler):
        def infer_impl(self, feed):
            calls.append(self.name)
            return super().infer_impl(feed)

    runners = [Named("a"), Named("b"), Named("c")]
    x = np.zeros((1, 3, 2, 2), np.float32)
    for runner in runners:
        runner.activate()
    time_interleaved(runners, [x] * 3, iterations=2, warmup=0)
    assert calls == ["a", "b", "c", "c", "b", "a"]


def test_latency_record():
    record = latency_record([0.001, 0.002, 0.003, 0.004], batch_size=8)
    assert sorted(record) == ["batch_size", "images_per_s", "max_ms", "mean_ms", "min_ms", "p50_ms", "p90_ms",
                              "p95_ms", "p99_ms", "runs", "spread", "unstable"]
    assert record["runs"] == 4 and record["batch_size"] == 8
    assert record["mean_ms"] == pytest.approx(2.5) and record["p50_ms"] == pytest.approx(2.5)
    assert record["min_ms"] == pytest.approx(1.0) and record["p90_ms"] == pytest.approx(3.7)
    assert record["max_ms"] == pytest.approx(4.0) and record["p95_ms"] == pytest.approx(3.85)
    assert record["images_per_s"] == pytest.approx(8 / 0.0025)  # from p50, not from the mean
    assert record["spread"] == pytest.approx(3.7 / 2.5) and not record["unstable"]
    noisy = latency_record([0.1] * 8 + [0.7] * 2, batch_size=1)  # a busy machine: p50 100 ms, p90 700 ms
    assert noisy["spread"] > UNSTABLE_SPREAD and noisy["unstable"]
    assert noisy["images_per_s"] == pytest.approx(10.0)
    assert latency_record([], 1) is None


def test_a_real_onnx_model_through_the_core(tiny_imagenet_onnx):
    from deploy.metadata import read_model_info
    from deploy.images import sample_images
    from deploy.preprocess import preprocess_file

    assert input_size_of(tiny_imagenet_onnx) == 32
    spec = read_model_info(tiny_imagenet_onnx).preprocess
    images = np.stack([preprocess_file(p, spec) for p in sample_images()[:5]])
    with OnnxRuntimeRunner(tiny_imagenet_onnx, threads=1) as runner:
        batched = infer_all(runner, images, batch_size=2)["logits"]
        whole = runner.infer({"input": images})["logits"]
    np.testing.assert_allclose(batched, whole, rtol=1e-4, atol=1e-5)


def test_time_alone_and_the_baseline_check():
    from deploy.runners.execution import DISTURBED_BASELINE, baseline_check, time_alone
    a = Doubler("a")
    x = np.zeros((2, 3, 2, 2), np.float32)
    with a:
        wall = time_alone(a, x, iterations=5, warmup=2)
    assert len(wall) == 5 and len(a.calls) == 7
    alone, turns = latency_record([0.010] * 5, 1), latency_record([0.0487] * 5, 1)
    check = baseline_check(alone, turns)  # the measurement: 10.1 ms alone, 48.7 ms in turns
    assert check["ratio"] == pytest.approx(4.87) and check["disturbed"]
    assert not baseline_check(alone, latency_record([0.0110] * 5, 1))["disturbed"]
    assert baseline_check(alone, latency_record([0.010 / (DISTURBED_BASELINE + 0.01)] * 5, 1))["disturbed"]
    assert baseline_check(None, turns) is None


def test_onnx_runtime_sessions_do_not_spin_unless_asked():
    # spinning threads take the cores of whatever is timed next (PyTorch in benchmark-engine)
    from deploy.runners.onnxruntime import SPINNING_ENTRY
    assert OnnxRuntimeRunner("m.onnx").session_options().get_session_config_entry(SPINNING_ENTRY) == "0"
    spinning = OnnxRuntimeRunner("m.onnx", allow_spinning=True)
    assert spinning.session_options().get_session_config_entry(SPINNING_ENTRY) == "1"
