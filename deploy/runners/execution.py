"""The one way a model is run over images: tensor names, artifact kinds, batching, warm-up, timing, latency.

deploy.infer, benchmark-engine, the attention parity, calibration statistics and the bench scripts all call
these functions, so a rule (how a short last batch is padded, when a model counts as fixed-batch, what a
latency summary holds) exists once. Torch-free and Python 3.8, like the rest of deploy/.
"""
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserError

# -- names ---------------------------------------------------------------------------------------------------

INPUT_NAME = "input"  # the image tensor of every exported classifier
OUTPUT_NAME = "logits"
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
ARTIFACT_KINDS = ("onnx", "engine")

# One set of timing defaults for every command that times models (benchmark-engine, pipeline, deploy.bench) and
# for the engines they build or bundle: small, because a Jetson and a 2-core CI machine run them too, and the
# largest engine batch is the largest batch that was timed, so every engine runs every batch it was measured at.
DEFAULT_BATCH_SIZES = (1, 8)
DEFAULT_WARMUP = 2        # uncounted runs per batch size
DEFAULT_ITERATIONS = 10   # timed runs per batch size; trtexec's default --iterations
DEFAULT_MAX_BATCH = max(DEFAULT_BATCH_SIZES)

UNSTABLE_SPREAD = 1.5  # p90 / p50 above this: the machine disturbed the timing; the row is marked unstable
LATENCY_PERCENTILES = (50, 90, 95, 99)  # trtexec's percentiles (90, 95, 99) and the median


def artifact_kind(path) -> str:
    """"onnx" or "engine", from the file name; any other file is an error, not a guess."""
    lower = os.fspath(path).lower()
    if lower.endswith(ONNX_SUFFIXES):
        return "onnx"
    if lower.endswith(ENGINE_SUFFIXES):
        return "engine"
    raise UserError("{}: not a model this tool runs; expected an ONNX model ({}) or a TensorRT engine ({})".format(
        os.fspath(path), ", ".join(ONNX_SUFFIXES), ", ".join(ENGINE_SUFFIXES)))


def input_size_of(path) -> int:
    """The square input size an artifact's metadata (ONNX metadata or engine sidecar) records."""
    from ..metadata import read_model_info
    return read_model_info(path).preprocess.input_size


def input_name(runner) -> str:
    """The single image input of a classifier (``input`` in every model we export)."""
    inputs = list(runner.get_input_metadata())
    if INPUT_NAME in inputs:
        return INPUT_NAME
    if len(inputs) != 1:
        raise UserError("expected a classifier with one image input, the model has {}".format(sorted(inputs)))
    return inputs[0]


def output_name(runner) -> str:
    outputs = list(runner.get_output_metadata())
    return OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]


# -- batching --------------------------------------------------------------------------------------------------

def fixed_batch_from_shape(shape: Optional[Sequence]) -> Optional[int]:
    """The batch of a static-batch input shape; None when the first axis is dynamic (None, a name, -1 or 0)."""
    if not shape:
        return None
    first = shape[0]
    if isinstance(first, (int, np.integer)) and not isinstance(first, bool) and first > 0:
        return int(first)
    return None


def fixed_batch_size(runner, name: Optional[str] = None) -> Optional[int]:
    """The batch a model was exported or built with, or None when its batch axis is dynamic."""
    meta = runner.get_input_metadata().get(name or input_name(runner))
    return fixed_batch_from_shape(meta.shape) if meta is not None else None


def max_batch_size(runner, name: Optional[str] = None) -> Optional[int]:
    """The largest batch of a TensorRT engine's optimization profile; None when unbounded or unknown."""
    profile = getattr(runner, "profile", None)
    shapes = profile(name or input_name(runner)) if callable(profile) else None
    return int(shapes[2][0]) if shapes else None


def pad_batch(array: np.ndarray, batch_size: int) -> np.ndarray:
    """``batch_size`` rows of real images: ``array`` itself, cycled when it is shorter (a fixed-batch model's
    last batch, or a timing batch larger than the image set). Callers drop the padded rows from the outputs."""
    if len(array) == batch_size:
        return np.ascontiguousarray(array)
    if len(array) == 0:
        raise UserError("no images to fill a batch of {}".format(batch_size))
    return np.ascontiguousarray(array[np.arange(batch_size) % len(array)])


def infer_batch(runner, array: np.ndarray, pad_to: Optional[int] = None,
                name: Optional[str] = None) -> Dict[str, np.ndarray]:
    """One ``infer`` call on ``array``: cast to the input's dtype (FP16 I/O models get the same values in their
    own type), padded to ``pad_to`` rows for a fixed-batch model, outputs trimmed back to ``len(array)``."""
    name = name or input_name(runner)
    count = len(array)
    meta = runner.get_input_metadata().get(name)
    if pad_to and count < pad_to:
        array = pad_batch(array, pad_to)
    if meta is not None and meta.dtype != array.dtype:
        array = array.astype(meta.dtype)
    outputs = runner.infer({name: array})
    return {key: np.asarray(value)[:count] for key, value in outputs.items()}


def logits_of(outputs: Dict[str, np.ndarray]) -> np.ndarray:
    values = outputs[OUTPUT_NAME] if OUTPUT_NAME in outputs else next(iter(outputs.values()))
    return np.asarray(values, dtype=np.float32)


def check_fixed_batch_memory(runner, fixed: int) -> None:
    """A model exported with a static batch of 200000 would make every call pad to that many images: refused
    with the memory it needs (deploy.validate's batch estimate), before the first batch is built."""
    from ..validate import MAX_BATCH, batch_memory_bytes, check_memory
    if fixed > MAX_BATCH:  # the bound of every --batch option, so export never writes such a model
        raise UserError("{}: its batch is fixed at {} images, above the limit of {}; export the model with a smaller "
                        "or a dynamic batch".format(runner.name, fixed, MAX_BATCH))
    meta = runner.get_input_metadata().get(input_name(runner))
    dims = [d for d in (meta.shape[2:] if meta is not None else ()) if isinstance(d, (int, np.integer)) and d > 0]
    size = int(max(dims)) if dims else 1
    check_memory(batch_memory_bytes(fixed, size), "{}: its fixed batch of {} images at {}x{}".format(
        runner.name, fixed, size, size), "export the model with a smaller or a dynamic batch")


def batch_plan(runner, batch_size: int) -> Tuple[int, Optional[int]]:
    """(rows per call, pad_to): a fixed-batch model takes exactly its batch, an engine at most its profile's."""
    fixed = fixed_batch_size(runner)
    if fixed:
        check_fixed_batch_memory(runner, fixed)
        return fixed, fixed
    limit = max_batch_size(runner)
    return (min(batch_size, limit) if limit else batch_size), None


def infer_all(runner, images: np.ndarray, batch_size: int,
              on_batch: Optional[Callable[[int], None]] = None) -> Dict[str, np.ndarray]:
    """Every output for every image, run in batches per :func:`batch_plan`; ``on_batch(n)`` after each."""
    step, pad_to = batch_plan(runner, batch_size)
    name = input_name(runner)
    parts: Dict[str, List[np.ndarray]] = {}
    for start in range(0, len(images), step):
        chunk = images[start:start + step]
        for key, value in infer_batch(runner, chunk, pad_to, name).items():
            parts.setdefault(key, []).append(value)
        if on_batch is not None:
            on_batch(len(chunk))
    return {key: np.concatenate(values) for key, values in parts.items()}


# -- timing ----------------------------------------------------------------------------------------------------

def latency_record(seconds: Sequence[float], batch_size: int) -> Optional[Dict[str, object]]:
    """The one latency summary (deploy.infer --json, benchmark JSON/CSV, bench scripts); None without runs.

    Keys: runs, batch_size, mean_ms, min_ms, max_ms, p50_ms, p90_ms, p95_ms, p99_ms, images_per_s (batch_size /
    p50, so a slow spell of a shared machine does not move it as a mean would), spread (p90 / p50) and unstable
    (spread > UNSTABLE_SPREAD).
    """
    if len(seconds) == 0:
        return None
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, LATENCY_PERCENTILES))
    spread = p90 / p50 if p50 > 0 else float("inf")
    return {"runs": int(len(ms)), "batch_size": int(batch_size), "mean_ms": float(ms.mean()),
            "min_ms": float(ms.min()), "max_ms": float(ms.max()), "p50_ms": p50, "p90_ms": p90, "p95_ms": p95,
            "p99_ms": p99,
            "images_per_s": 1000.0 * batch_size / p50 if p50 > 0 else 0.0,
            "spread": spread, "unstable": bool(spread > UNSTABLE_SPREAD)}


class Clocks:
    """Marks a runner's clocks (``inference_times``, and ``compute_times`` where the backend has GPU timing),
    so the calls made since can be read back without clearing what others recorded."""

    def __init__(self, runner):
        self.runner = runner
        self.wall_start = len(runner.inference_times)
        compute = getattr(runner, "compute_times", None)
        self.compute_start = len(compute) if compute is not None else 0

    def wall(self) -> List[float]:
        return list(self.runner.inference_times[self.wall_start:])

    def compute(self) -> List[float]:
        compute = getattr(self.runner, "compute_times", None)
        return list(compute[self.compute_start:]) if compute is not None else []


def warm_up(runner, feed_rows: np.ndarray, runs: int = 1, pad_to: Optional[int] = None) -> None:
    """Uncounted calls: the first call at a shape pays for allocation, kernel selection, graph capture."""
    for _ in range(runs):
        infer_batch(runner, feed_rows, pad_to)


def time_interleaved(runners: Sequence, batches: Sequence[np.ndarray], iterations: int, warmup: int = 1,
                     per_turn: int = 1, on_call: Optional[Callable[[int], None]] = None
                     ) -> List[Tuple[List[float], List[float]]]:
    """Time each runner on its batch, the runners taking turns (A B, then B A, ...) so that a slow spell of
    the machine hits them all alike, ``per_turn`` calls per turn, ``iterations`` turns each.

    Returns, per runner, (wall seconds per call, GPU compute seconds per call or []). ``warmup`` uncounted
    calls per runner come first. ``on_call(rows)`` is called after every timed call (progress bars).
    """
    for runner, batch in zip(runners, batches):
        warm_up(runner, batch, warmup)
    clocks = [Clocks(runner) for runner in runners]
    order = list(range(len(runners)))
    for turn in range(iterations):
        for index in (order if turn % 2 == 0 else order[::-1]):
            for _ in range(per_turn):
                infer_batch(runners[index], batches[index])
                if on_call is not None:
                    on_call(len(batches[index]))
    return [(clock.wall(), clock.compute()) for clock in clocks]


# -- the baseline, timed alone -------------------------------------------------------------------------------

# PyTorch's p50 in turns with the other backends against its p50 alone: beyond this the other backends took its
# cores (ONNX Runtime's spinning threads did, 2-62x on 2 cores), and a speed-up over it would not be PyTorch's.
DISTURBED_BASELINE = 1.15


def time_alone(runner, batch: np.ndarray, iterations: int, warmup: int = 1) -> List[float]:
    """Wall seconds of ``iterations`` consecutive calls of one runner, no other backend between them: its own
    speed, to hold the same runner's p50 in :func:`time_interleaved` against. ``warmup`` calls come first (they
    also outlast whatever another backend's threads still do from its last call)."""
    warm_up(runner, batch, warmup)
    clock = Clocks(runner)
    for _ in range(iterations):
        infer_batch(runner, batch)
    return clock.wall()


def baseline_check(alone: Optional[Dict[str, object]], interleaved: Optional[Dict[str, object]]
                   ) -> Optional[Dict[str, object]]:
    """How one runner's p50 in turns compares with its p50 alone (two latency records): ``ratio`` (in turns /
    alone) and ``disturbed`` (off by more than DISTURBED_BASELINE either way); None when either is missing."""
    if not alone or not interleaved or not alone["p50_ms"] or not interleaved["p50_ms"]:
        return None
    ratio = float(interleaved["p50_ms"]) / float(alone["p50_ms"])
    return {"alone_p50_ms": float(alone["p50_ms"]), "interleaved_p50_ms": float(interleaved["p50_ms"]),
            "ratio": ratio, "disturbed": bool(max(ratio, 1.0 / ratio) > DISTURBED_BASELINE)}
