"""`benchmark-engine` as a library: parity on real images and speed of deployed artifacts vs PyTorch.

Every backend (the PyTorch reference, ONNX Runtime for ONNX models of any precision, TensorRT for engines)
is fed the same preprocessed tensors: the images are decoded once through the one preprocessing that every
artifact's metadata must agree on. Backends run one at a time, so they never compete for the cores.
"""
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from deploy.compare import compare_logits, topk_indices
from deploy.errors import UserError
from deploy.images import SAMPLES_DIR
from deploy.metadata import ModelInfo, read_model_info
from deploy.preprocess import PreprocessSpec

from .environment import collect_environment, cpu_count

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
ONNX_SUFFIX = ".onnx"
DEFAULT_BATCH_SIZES = (1, 8, 32)
PERCENTILES = (50, 90, 99)


@dataclass
class BenchmarkOptions:
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES
    warmup: int = 2
    iterations: int = 20
    threads: Optional[int] = None  # default: every core this process may use
    device: str = "cpu"
    cuda_graph: bool = False
    num_images: int = 256
    seed: int = 0
    progress: bool = True

    def resolved_threads(self) -> int:
        return int(self.threads or cpu_count())


@dataclass
class Reference:
    arch: str
    model: object  # torch.nn.Module; typed loosely so this module imports without torch
    spec: PreprocessSpec
    num_classes: int
    random_weights: bool
    checkpoint_sha256: str = ""


@dataclass
class Artifact:
    path: str
    kind: str  # "onnx" or "engine"
    info: ModelInfo

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def precision(self) -> str:
        extra = self.info.extra or {}
        target = extra.get("quant_target") or extra.get("target") or extra.get("int8_target")
        return "{} ({})".format(self.info.precision, target) if target else self.info.precision


@dataclass
class EvalImages:
    array: np.ndarray  # (N, 3, S, S) float32, through the shared preprocessing
    labels: Optional[np.ndarray]
    paths: List[str]
    source: str
    skipped: List = field(default_factory=list)
    loaded: object = None  # the calibration.data.LoadedImages these came from, reusable for calibrate(images=)

    @property
    def labeled(self) -> bool:
        return self.labels is not None


@dataclass
class Timing:
    batch_size: int
    iterations: int
    throughput: float  # images per second, end to end
    latency_ms: Dict[str, float]  # mean, p50, p90, p99
    compute_throughput: Optional[float] = None
    compute_ms: Optional[Dict[str, float]] = None


@dataclass
class BackendResult:
    name: str
    path: str
    kind: str  # "pytorch", "onnx" or "engine"
    precision: str
    runner: Dict[str, object]
    top1_accuracy: Optional[float] = None  # percent, when labels are known
    top5_accuracy: Optional[float] = None
    top1_agreement: Optional[float] = None  # percent of images whose top-1 class equals the reference's
    top5_agreement: Optional[float] = None
    max_abs_error: Optional[float] = None
    mean_abs_error: Optional[float] = None
    cosine_similarity: Optional[float] = None
    timings: List[Timing] = field(default_factory=list)
    skipped_batches: Dict[int, str] = field(default_factory=dict)
    top1_drop: Optional[float] = None  # points vs the reference (accuracy, else 100 - agreement)

    def timing(self, batch_size: int) -> Optional[Timing]:
        return next((t for t in self.timings if t.batch_size == batch_size), None)


@dataclass
class BenchmarkResult:
    arch: str
    weights: str
    reference: BackendResult
    artifacts: List[BackendResult]
    data: Dict[str, object]
    options: Dict[str, object]
    environment: Dict[str, object]
    notes: List[str] = field(default_factory=list)

    @property
    def backends(self) -> List[BackendResult]:
        return [self.reference] + list(self.artifacts)

    def breaches(self, max_top1_drop: Optional[float]) -> List[BackendResult]:
        if max_top1_drop is None:
            return []
        return [a for a in self.artifacts if a.top1_drop is not None and a.top1_drop > max_top1_drop]

    def to_dict(self) -> Dict[str, object]:
        return {
            "arch": self.arch,
            "weights": self.weights,
            "reference": asdict(self.reference),
            "artifacts": [asdict(a) for a in self.artifacts],
            "data": self.data,
            "options": self.options,
            "environment": self.environment,
            "notes": self.notes,
        }


# -- the reference and the artifacts ---------------------------------------------------------------------

def load_reference(arch: str, weights=None, input_size: Optional[int] = None) -> Reference:
    import models
    from exporter.api import model_num_classes, preprocess_for

    model, checkpoint = models.load_model(arch, weights)
    spec = preprocess_for(model, int(input_size or model.preprocess.input_size))
    return Reference(arch, model, spec, model_num_classes(model), checkpoint is None,
                     checkpoint.sha256 if checkpoint else "")


def artifact_kind(path: str) -> str:
    return "onnx" if path.lower().endswith(ONNX_SUFFIX) else "engine"


def _describe_spec(spec: PreprocessSpec) -> str:
    return "{0}x{0} (resize {1}, {2})".format(spec.input_size, spec.resize_size, spec.interpolation)


def _same_spec(a: PreprocessSpec, b: PreprocessSpec) -> bool:
    return (a.input_size == b.input_size and a.resize_size == b.resize_size and a.interpolation == b.interpolation
            and np.allclose(a.mean, b.mean, atol=1e-6) and np.allclose(a.std, b.std, atol=1e-6))


def check_artifact(artifact: Artifact, reference: Reference) -> List[str]:
    """Raise UserError when the artifact cannot be compared with the reference; return softer notes."""
    info = artifact.info
    if info.preprocess.input_size != reference.spec.input_size:
        raise UserError("{} takes {}x{} input but the reference {} is set up for {}x{}; pass --input-size {} if "
                        "the reference should use it".format(
                            artifact.name, info.preprocess.input_size, info.preprocess.input_size, reference.arch,
                            reference.spec.input_size, reference.spec.input_size, info.preprocess.input_size))
    if info.num_classes != reference.num_classes:
        raise UserError("{} has {} classes but the reference {} has {}; give the weights it was exported from".format(
            artifact.name, info.num_classes, reference.arch, reference.num_classes))
    if not _same_spec(info.preprocess, reference.spec):
        raise UserError("{} expects preprocessing {} (mean {}, std {}) but the reference uses {} (mean {}, std {})"
                        .format(artifact.name, _describe_spec(info.preprocess), info.preprocess.mean,
                                info.preprocess.std, _describe_spec(reference.spec), reference.spec.mean,
                                reference.spec.std))
    notes = []
    if info.arch != reference.arch:
        notes.append("{} was exported from {}, the reference is {}".format(artifact.name, info.arch, reference.arch))
    if info.checkpoint_sha256 != reference.checkpoint_sha256:
        notes.append("{} was exported from other weights than the reference's ({})".format(
            artifact.name, "random" if not info.checkpoint_sha256 else "checkpoint " + info.checkpoint_sha256[:12]))
    return notes


def tensorrt_available() -> bool:
    try:
        from deploy.trt.compat import tensorrt_available as probe
    except ImportError:
        import importlib.util
        return importlib.util.find_spec("tensorrt") is not None
    return bool(probe())


def inspect_artifacts(paths: Sequence[str], reference: Reference) -> Tuple[List[Artifact], List[str]]:
    """Read and check every artifact before anything is timed, so a mismatch fails fast with one line."""
    if not paths:
        raise UserError("give at least one artifact (ONNX model or TensorRT engine)")
    artifacts, notes = [], []
    for path in paths:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise UserError("no such artifact: {}".format(path))
        kind = artifact_kind(path)
        if kind == "engine" and not tensorrt_available():
            raise UserError("{} is a TensorRT engine, but TensorRT is not installed here (the tensorrt Python "
                            "package cannot be imported); benchmark its ONNX model instead".format(path))
        artifact = Artifact(path, kind, read_model_info(path))
        notes.extend(check_artifact(artifact, reference))
        artifacts.append(artifact)
    return artifacts, notes


# -- images ------------------------------------------------------------------------------------------------

def load_images(data_dir, labels_file, spec: PreprocessSpec, num_images: int, seed: int = 0,
                progress: bool = True) -> EvalImages:
    """Images from ``data_dir``; without ``data_dir``, the sample photos (unlabeled). A given folder must exist."""
    from calibration.data import load_dataset

    if data_dir is None:
        if labels_file is not None:
            raise UserError("--labels needs --data")
        loaded = load_dataset(SAMPLES_DIR, spec, num_images=num_images, seed=seed, progress=progress)
        source = "sample images ({}, unlabeled)".format(SAMPLES_DIR)
        labels = None
    else:
        if not os.path.isdir(os.fspath(data_dir)):
            raise UserError("data folder not found: {}".format(data_dir))
        loaded = load_dataset(data_dir, spec, labels_file=labels_file, num_images=num_images, seed=seed,
                              progress=progress)
        source = os.fspath(data_dir)
        labels = loaded.labels
    if len(loaded.array) == 0:
        raise UserError("no readable images in {}".format(source))
    return EvalImages(np.ascontiguousarray(loaded.array, dtype=np.float32), labels, list(loaded.paths), source,
                      list(loaded.skipped), loaded)


def make_batch(images: np.ndarray, batch_size: int) -> np.ndarray:
    """``batch_size`` real images, cycling through them when there are fewer."""
    index = np.arange(batch_size) % len(images)
    return np.ascontiguousarray(images[index])


# -- runners -----------------------------------------------------------------------------------------------

def make_runner(artifact: Artifact, options: BenchmarkOptions):
    if artifact.kind == "onnx":
        from deploy.runners import OnnxRuntimeRunner
        providers = ("cuda", "cpu") if options.device == "cuda" else ("cpu",)
        return OnnxRuntimeRunner(artifact.path, providers=providers, threads=options.resolved_threads(),
                                 name=artifact.name)
    from deploy.runners.tensorrt import TensorRTRunner
    return TensorRTRunner(artifact.path, use_cuda_graph=options.cuda_graph)


def fixed_batch_size(runner) -> Optional[int]:
    """The batch size a model was exported with, or None when its batch axis is dynamic."""
    meta = runner.get_input_metadata().get(INPUT_NAME)
    if meta is None or not meta.shape:
        return None
    first = meta.shape[0]
    return int(first) if isinstance(first, (int, np.integer)) and first > 0 else None


def max_batch_size(runner) -> Optional[int]:
    """The largest batch of a TensorRT engine's optimization profile; None when unbounded or unknown."""
    profile = getattr(runner, "profile", None)
    shapes = profile(INPUT_NAME) if callable(profile) else None
    return int(shapes[2][0]) if shapes else None


def _infer(runner, batch: np.ndarray) -> np.ndarray:
    meta = runner.get_input_metadata().get(INPUT_NAME)
    if meta is not None and meta.dtype != batch.dtype:
        batch = batch.astype(meta.dtype)  # a model with FP16 I/O gets the same values in its own type
    outputs = runner.infer({INPUT_NAME: batch})
    logits = outputs[OUTPUT_NAME] if OUTPUT_NAME in outputs else next(iter(outputs.values()))
    return np.asarray(logits, dtype=np.float32)


def run_all(runner, images: np.ndarray, chunk: int, fixed: Optional[int], bar=None) -> np.ndarray:
    """Logits of every image, in chunks; a fixed-batch model gets its last chunk padded and trimmed."""
    size = fixed or chunk
    logits = []
    for start in range(0, len(images), size):
        part = images[start:start + size]
        count = len(part)
        if fixed and count < fixed:
            part = make_batch(part, fixed)
        logits.append(_infer(runner, part)[:count])
        if bar is not None:
            bar.update(count)
    return np.concatenate(logits)


def latency_stats(seconds: Sequence[float]) -> Dict[str, float]:
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    stats = {"mean": float(ms.mean())}
    stats.update({"p{}".format(p): float(np.percentile(ms, p)) for p in PERCENTILES})
    return stats


def time_batch(runner, images: np.ndarray, batch_size: int, warmup: int, iterations: int, bar=None) -> Timing:
    """Time ``iterations`` calls on one batch of real images after 1 + ``warmup`` uncounted calls."""
    batch = make_batch(images, batch_size)
    for _ in range(1 + warmup):  # the first call at a new shape pays for allocation and kernel selection
        _infer(runner, batch)
    compute = getattr(runner, "compute_times", None)
    start, compute_start = len(runner.inference_times), len(compute) if compute is not None else 0
    for _ in range(iterations):
        _infer(runner, batch)
        if bar is not None:
            bar.update(batch_size)
    wall = runner.inference_times[start:]
    timing = Timing(batch_size, iterations, batch_size * len(wall) / float(sum(wall)), latency_stats(wall))
    measured = list(compute[compute_start:]) if compute is not None else []
    if measured:
        timing.compute_ms = latency_stats(measured)
        timing.compute_throughput = batch_size * len(measured) / float(sum(measured))
    return timing


def benchmark_runner(runner, result: BackendResult, images: EvalImages, options: BenchmarkOptions,
                     bar=None) -> np.ndarray:
    """Activate, warm up, compute logits of every image, time each batch size; return the logits."""
    with runner:
        fixed, limit = fixed_batch_size(runner), max_batch_size(runner)
        _infer(runner, make_batch(images.array, fixed or 1))  # the backend's first run: a warm-up
        logits = run_all(runner, images.array, min(max(options.batch_sizes), limit or np.inf), fixed, bar)
        for batch_size in options.batch_sizes:
            if fixed and batch_size != fixed:
                result.skipped_batches[batch_size] = "model has a fixed batch size of {}".format(fixed)
                continue
            if limit and batch_size > limit:
                result.skipped_batches[batch_size] = "beyond the engine's profile (max batch {})".format(limit)
                continue
            try:
                result.timings.append(time_batch(runner, images.array, batch_size, options.warmup,
                                                 options.iterations, bar))
            except (UserError, RuntimeError) as exc:  # e.g. a batch outside an engine's optimization profile
                result.skipped_batches[batch_size] = str(exc).splitlines()[0]
        result.runner = runner.describe()
    return logits


# -- parity ------------------------------------------------------------------------------------------------

def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = topk_indices(logits, k)
    return float(100.0 * np.mean(np.any(top == labels[:, None], axis=1)))


def score(result: BackendResult, logits: np.ndarray, reference_logits: Optional[np.ndarray],
          labels: Optional[np.ndarray]) -> None:
    if labels is not None:
        result.top1_accuracy = topk_accuracy(logits, labels, 1)
        result.top5_accuracy = topk_accuracy(logits, labels, 5)
    if reference_logits is None:
        return
    comparison = compare_logits(reference_logits, logits)
    result.top1_agreement = 100.0 * comparison.top1_agreement
    result.top5_agreement = 100.0 * comparison.top5_agreement
    result.max_abs_error = comparison.max_abs_error
    result.mean_abs_error = comparison.mean_abs_error
    result.cosine_similarity = comparison.cosine_similarity


def top1_drop(result: BackendResult, reference: BackendResult) -> Optional[float]:
    """Points lost vs the reference: accuracy when labels are known, else disagreement."""
    if result.top1_accuracy is not None and reference.top1_accuracy is not None:
        return reference.top1_accuracy - result.top1_accuracy
    if result.top1_agreement is not None:
        return 100.0 - result.top1_agreement
    return None


# -- the whole run -----------------------------------------------------------------------------------------

def _progress_bar(total: int, enabled: bool):
    from deploy.progress import progress_bar
    return progress_bar(total, enabled=enabled)


def _work_units(num_backends: int, num_images: int, options: BenchmarkOptions) -> int:
    return num_backends * (num_images + sum(options.batch_sizes) * options.iterations)


def validate_options(options: BenchmarkOptions) -> None:
    if not options.batch_sizes or any(b < 1 for b in options.batch_sizes):
        raise UserError("batch sizes must be positive integers, got {}".format(list(options.batch_sizes)))
    if options.iterations < 1 or options.warmup < 0:
        raise UserError("need --iterations >= 1 and --warmup >= 0")
    if options.device not in ("cpu", "cuda"):
        raise UserError("device must be cpu or cuda, got {!r}".format(options.device))
    if options.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UserError("--device cuda: PyTorch sees no CUDA GPU on this machine")


def benchmark_engine(artifact_paths: Sequence[str], arch: str, weights=None, data_dir=None, labels_file=None,
                     input_size: Optional[int] = None, options: Optional[BenchmarkOptions] = None,
                     reference: Optional[Reference] = None, images: Optional[EvalImages] = None) -> BenchmarkResult:
    """Check, then measure parity and speed of each artifact and of the PyTorch reference."""
    from .torch_runner import TorchRunner

    options = options or BenchmarkOptions()
    validate_options(options)
    reference = reference or load_reference(arch, weights, input_size)
    artifacts, notes = inspect_artifacts(artifact_paths, reference)  # fails before any image is decoded
    if images is None:
        images = load_images(data_dir, labels_file, reference.spec, options.num_images, options.seed,
                             options.progress)
    if data_dir is None:
        notes.append("no --data: parity is measured on the {} sample photos, unlabeled".format(len(images.array)))
    if options.cuda_graph and options.device != "cuda" and not any(a.kind == "engine" for a in artifacts):
        notes.append("--cuda-graph applies to TensorRT engines and to PyTorch on --device cuda; nothing used it")
    threads = options.resolved_threads()

    ref_result = BackendResult("pytorch " + reference.arch, "", "pytorch", "fp32", {})
    results = [BackendResult(a.name, a.path, a.kind, a.precision, {}) for a in artifacts]
    bar = _progress_bar(_work_units(1 + len(artifacts), len(images.array), options), options.progress)
    try:
        bar.set_description(ref_result.name)
        runner = TorchRunner(reference.model, threads=threads, device=options.device,
                             use_cuda_graph=options.cuda_graph)
        ref_logits = benchmark_runner(runner, ref_result, images, options, bar)
        score(ref_result, ref_logits, None, images.labels)
        for artifact, result in zip(artifacts, results):
            bar.set_description(artifact.name)
            logits = benchmark_runner(make_runner(artifact, options), result, images, options, bar)
            score(result, logits, ref_logits, images.labels)
            result.top1_drop = top1_drop(result, ref_result)
            if options.device == "cuda" and result.runner.get("providers") == ["CPUExecutionProvider"]:
                notes.append("{} ran on ONNX Runtime's CPU provider: this onnxruntime has no CUDA provider".format(
                    artifact.name))
    finally:
        bar.close()

    ort = next((r.runner for r in results if r.runner.get("backend") == "onnxruntime"), {})
    ort_settings = {k: ort[k] for k in ("providers", "threads", "graph_optimization_level", "enable_mem_arena")
                    if k in ort}
    if ort_settings:
        ort_settings["inter_op_num_threads"] = 1
    return BenchmarkResult(
        arch=reference.arch,
        weights=os.fspath(weights) if weights else "random (seed 0)",
        reference=ref_result,
        artifacts=results,
        data={"source": images.source, "num_images": int(len(images.array)), "labeled": images.labeled,
              "skipped": [list(s) for s in images.skipped], "input_size": reference.spec.input_size},
        options={"batch_sizes": list(options.batch_sizes), "warmup": options.warmup,
                 "iterations": options.iterations, "threads": threads, "device": options.device,
                 "cuda_graph": options.cuda_graph, "seed": options.seed},
        environment=collect_environment(threads, ort_settings),
        notes=notes,
    )
