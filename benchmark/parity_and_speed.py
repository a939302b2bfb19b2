"""`benchmark-engine` as a library: parity on real images and speed of deployed artifacts vs PyTorch.

What the artifacts say comes first: the reference architecture, input size, classes and preprocessing are read
from the first artifact's metadata (flags only override them), and every artifact must agree on them. Every
backend (the PyTorch reference, ONNX Runtime for ONNX models of any precision, TensorRT for engines) is fed
the same preprocessed tensors. Batching, padding, warm-up, timing and the latency record are those of
deploy.runners.execution. All backends stay loaded and are timed in turns (A, B, A, B, ...) at each batch
size, so a slow spell of a shared machine hits them alike; they never run at the same moment.
"""
import os
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from deploy.compare import check_finite_outputs, compare_logits, topk_indices
from deploy.reference import DEFAULT_REFERENCE_IMAGES
from deploy.runners.execution import DEFAULT_BATCH_SIZES, DEFAULT_ITERATIONS, DEFAULT_WARMUP
from deploy.errors import UserError
from deploy.images import SAMPLES_DIR
from deploy.metadata import (PROGRAM_SOURCES, SOURCE_ONNX, SOURCE_ZOO, ModelInfo, read_model_info)
from deploy.preprocess import PreprocessSpec
from deploy.runners.execution import (DISTURBED_BASELINE, UNSTABLE_SPREAD, artifact_kind, baseline_check,
                                      batch_plan, fixed_batch_size, infer_all, latency_record, logits_of,
                                      max_batch_size, pad_batch, time_alone, time_interleaved, warm_up)
from deploy.validate import (MAX_BATCH, MAX_ITERATIONS, MAX_NUM_IMAGES, check_batch_memory, check_bound,
                             check_threads)

from .environment import collect_environment, cpu_count

DEVICES = ("cpu", "cuda")
# fp16: half precision and channels-last, the fair reference for a TensorRT FP16 engine on a GPU
REFERENCE_PRECISIONS = ("fp32", "fp16")


@dataclass
class BenchmarkOptions:
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES
    warmup: int = DEFAULT_WARMUP
    iterations: int = DEFAULT_ITERATIONS
    threads: Optional[int] = None  # default: every core this process may use
    device: str = "cpu"
    cuda_graph: bool = False
    num_images: int = DEFAULT_REFERENCE_IMAGES  # the bundle's default too: one model, one image set, one figure
    seed: int = 0
    progress: bool = True
    reference_precision: str = "fp32"
    strict: bool = False  # --weights that are not the artifact's checkpoint: an error instead of a warning

    def __post_init__(self):
        # deploy.validate's bounds, for every caller (the pipeline, the bench scripts) and not only the CLI
        check_bound("--batch-sizes", tuple(self.batch_sizes), MAX_BATCH)
        check_bound("--warmup", self.warmup, MAX_ITERATIONS, minimum=0)
        check_bound("--iterations", self.iterations, MAX_ITERATIONS)
        check_bound("--num-images", self.num_images, MAX_NUM_IMAGES)
        check_threads("--threads", self.threads)

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
    # an ONNX model from elsewhere has no PyTorch original: its FP32 ONNX (run in ONNX Runtime) is the reference
    onnx_path: Optional[str] = None
    source_kind: str = SOURCE_ZOO

    @property
    def label(self) -> str:
        """What every report calls the reference: PyTorch, or the FP32 ONNX where there was no PyTorch program."""
        if self.onnx_path:
            return "fp32 onnx {} (reference: no PyTorch program)".format(self.arch)
        return "pytorch {}{}".format(self.arch, " ({} program)".format(self.source_kind)
                                    if self.source_kind in PROGRAM_SOURCES else "")


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
    loaded: object = None  # the data.datasets.LoadedImages these came from, reusable for calibrate(images=)

    @property
    def labeled(self) -> bool:
        return self.labels is not None


@dataclass
class Timing:
    """One batch size of one backend: the latency record of deploy.runners.execution (end to end) and, where
    the backend has a device clock, the same record for compute alone."""

    batch_size: int
    latency: Dict[str, object]
    compute: Optional[Dict[str, object]] = None
    alone: Optional[Dict[str, object]] = None  # the reference's latency record timed alone, no backend between
    # an artifact's latency record timed in turns with the other artifacts but not the reference: the speed-up
    # compares this with the reference alone, each side at its own speed (PyTorch's threads keep spinning after
    # its calls and slowed the backend timed next by up to 1.35x on 2 cores; docs/PERFORMANCE.md)
    apart: Optional[Dict[str, object]] = None

    @property
    def baseline(self) -> Optional[Dict[str, object]]:
        """The reference's p50 in turns against its p50 alone (execution.baseline_check), where timed alone."""
        return baseline_check(self.alone, self.latency)

    @property
    def images_per_s(self) -> float:
        return float(self.latency["images_per_s"])

    @property
    def unstable(self) -> bool:
        return bool(self.latency["unstable"])


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

    def disturbed_batches(self) -> List[int]:
        """Batch sizes where PyTorch in turns ran more than DISTURBED_BASELINE off its own speed alone: the other
        backends took its cores, so no speed-up over it is given there."""
        return [t.batch_size for t in self.reference.timings if t.baseline and t.baseline["disturbed"]]

    def speedups(self) -> Dict[str, Dict[int, float]]:
        """{artifact label: {batch size: reference p50 / artifact p50}}: ratios of medians, never of means, each
        side timed on its own (the reference alone, the artifact apart from it) where it was, and none at a batch
        size whose baseline was disturbed. The labels are unique (``short_labels``), so every artifact keeps its
        entry."""
        ratios = {}
        disturbed = set(self.disturbed_batches())
        for backend in self.artifacts:
            for timing in backend.timings:
                ref = self.reference.timing(timing.batch_size)
                if ref is not None and timing.batch_size not in disturbed:
                    ratios.setdefault(backend.name, {})[timing.batch_size] = (
                        float((ref.alone or ref.latency)["p50_ms"]) / float((timing.apart or timing.latency)["p50_ms"]))
        return ratios

    def to_dict(self) -> Dict[str, object]:
        return {
            "arch": self.arch,
            "weights": self.weights,
            "reference": asdict(self.reference),
            "artifacts": [asdict(a) for a in self.artifacts],
            "speedups_p50": {name: {str(b): r for b, r in by_batch.items()}
                             for name, by_batch in self.speedups().items()},
            "baseline": {str(t.batch_size): t.baseline for t in self.reference.timings if t.baseline},
            "data": self.data,
            "options": self.options,
            "environment": self.environment,
            "notes": self.notes,
        }


# -- the artifacts and the reference ---------------------------------------------------------------------

# What every artifact of one run must agree on, as (field name in errors, getter).
AGREED_FIELDS = (
    ("arch", lambda info: info.arch),
    ("num_classes", lambda info: info.num_classes),
    ("input_size", lambda info: info.preprocess.input_size),
    ("resize_size", lambda info: info.preprocess.resize_size),
    ("interpolation", lambda info: info.preprocess.interpolation),
    ("mean", lambda info: tuple(round(float(v), 6) for v in info.preprocess.mean)),
    ("std", lambda info: tuple(round(float(v), 6) for v in info.preprocess.std)),
    ("normalize_in_graph", lambda info: info.preprocess.normalize_in_graph),  # pixels or normalized images in
)


def tensorrt_available() -> bool:
    try:
        from deploy.trt.compat import tensorrt_available as probe
    except ImportError:
        import importlib.util
        return importlib.util.find_spec("tensorrt") is not None
    return bool(probe())


def read_artifacts(paths: Sequence[str]) -> List[Artifact]:
    """Each artifact's kind and metadata; artifacts that disagree on what the reference is are an error."""
    if not paths:
        raise UserError("give at least one artifact (ONNX model or TensorRT engine)")
    artifacts = []
    for path in paths:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise UserError("no such artifact: {}".format(path))
        kind = artifact_kind(path)
        if kind == "engine" and not tensorrt_available():
            raise UserError("{} is a TensorRT engine, but TensorRT is not installed here (the tensorrt Python "
                            "package cannot be imported); benchmark its ONNX model instead".format(path))
        artifacts.append(Artifact(path, kind, read_model_info(path)))
    first = artifacts[0]
    for other in artifacts[1:]:
        for name, get in AGREED_FIELDS:
            if get(other.info) != get(first.info):
                raise UserError("the artifacts disagree on {}: {} has {}, {} has {}; benchmark them separately"
                                .format(name, first.name, _show(get(first.info)), other.name, _show(get(other.info))))
    return artifacts


def short_labels(paths: Sequence[str]) -> List[str]:
    """One short, unique name per artifact for table rows, legends and ``speedups_p50``: its file name, with as
    many parent folders as it takes to tell apart files of the same name (``int8/eca.onnx``, ``fp32/eca.onnx``)."""
    parts = [os.path.abspath(os.fspath(p)).split(os.sep) for p in paths]
    depth = [1] * len(parts)
    while True:
        labels = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        clashing = [i for i, label in enumerate(labels)
                    if any(other == label and parts[j] != parts[i] for j, other in enumerate(labels))]
        if not clashing:
            break
        for i in clashing:
            depth[i] += 1
    seen: Dict[str, int] = {}
    unique = []
    for label in labels:  # the same file given twice is still two rows
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else "{} ({})".format(label, seen[label]))
    return unique


def _show(value) -> str:
    return ",".join("{:g}".format(v) for v in value) if isinstance(value, tuple) else str(value)


def load_reference(arch: str, weights=None, input_size: Optional[int] = None, num_classes: Optional[int] = None,
                   spec: Optional[PreprocessSpec] = None) -> Reference:
    """The PyTorch model ``arch`` with ``weights`` (else random, seed 0), preprocessing ``spec`` (else the
    zoo's), at ``input_size`` when given. ``num_classes`` applies to random weights; a checkpoint has its own."""
    import models
    from models.info import num_classes_of, preprocess_for

    model, checkpoint = models.load_model(arch, weights, num_classes=None if weights else num_classes)
    if spec is not None:
        model.preprocess = spec  # the artifact's preprocessing, so the reference sees the same images
    spec = preprocess_for(model, int(input_size or model.preprocess.input_size))
    return Reference(arch, model, spec, num_classes_of(model), checkpoint is None,
                     checkpoint.sha256 if checkpoint else "")


def original_reference(info: ModelInfo, weights=None, candidates: Sequence[str] = (), source: str = "the models"
                       ) -> Optional[Reference]:
    """The reference of a model exported from a program or an ONNX file (None for a zoo model): the program given
    as ``weights`` (its sha256 must be the one recorded), or the FP32 ONNX (``weights``, else the first FP32 one
    among ``candidates``) for an ONNX model from elsewhere. ``arch`` is never looked up as a zoo name here."""
    if info.from_program:
        from models.program import load_checked_program, output_classes
        if weights is None:
            raise UserError("{} were exported from the {} program {} (sha256 {}); give that file with --weights".format(
                source, info.source_kind, info.arch, info.checkpoint_sha256[:12]))
        program = load_checked_program(weights, info.checkpoint_sha256, source)
        classes = output_classes(program, info.preprocess.input_size)
        return Reference(info.arch, program.module, info.preprocess, classes, False, program.sha256,
                         source_kind=info.source_kind)
    if info.source_kind != SOURCE_ONNX:
        return None
    paths = [os.fspath(weights)] if weights is not None else list(candidates)
    for path in paths:
        other = read_model_info(path) if path.endswith(".onnx") else None
        if other is not None and other.source_kind == SOURCE_ONNX and other.precision == "fp32" \
                and other.checkpoint_sha256 == info.checkpoint_sha256:
            return Reference(info.arch, None, info.preprocess, other.num_classes, False, other.checkpoint_sha256,
                             onnx_path=path, source_kind=SOURCE_ONNX)
        if weights is not None:
            raise UserError("--weights {} is not the FP32 ONNX model {} were exported from (an `export` of the ONNX "
                            "file with sha256 {})".format(path, source, info.checkpoint_sha256[:12]))
    raise UserError("{} come from an ONNX model without a PyTorch program, so their FP32 ONNX is the reference: "
                    "list it among them or give it with --weights".format(source))


def reference_for(artifacts: Sequence[Artifact], arch: Optional[str] = None, weights=None,
                  input_size: Optional[int] = None) -> Reference:
    """The reference the first artifact describes (architecture, classes, preprocessing); flags override."""
    info = artifacts[0].info
    if info.source_kind != SOURCE_ZOO:
        if arch is not None and arch != info.arch:
            raise UserError("--reference names a zoo model, but {} was exported from a {} file; give that file with "
                            "--weights".format(artifacts[0].name, info.source_kind))
        if input_size is not None and input_size != info.preprocess.input_size:
            raise UserError("--input-size {} differs from the {} the program was exported at".format(
                input_size, info.preprocess.input_size))
        return original_reference(info, weights, [a.path for a in artifacts if a.kind == "onnx"],
                                  "the artifacts")
    return load_reference(arch or info.arch, weights, input_size, num_classes=info.num_classes,
                          spec=info.preprocess)


def _describe_spec(spec: PreprocessSpec) -> str:
    return "{0}x{0} (resize {1}, {2}{3})".format(spec.input_size, spec.resize_size, spec.interpolation,
                                                 ", normalization in the graph" if spec.normalize_in_graph else "")


def _same_spec(a: PreprocessSpec, b: PreprocessSpec) -> bool:
    return (a.input_size == b.input_size and a.resize_size == b.resize_size and a.interpolation == b.interpolation
            and np.allclose(a.mean, b.mean, atol=1e-6) and np.allclose(a.std, b.std, atol=1e-6)
            and a.normalize_in_graph == b.normalize_in_graph)


def check_artifact(artifact: Artifact, reference: Reference) -> List[str]:
    """Raise UserError when the artifact cannot be compared with the reference; return softer notes."""
    info = artifact.info
    if info.preprocess.input_size != reference.spec.input_size:
        raise UserError("{} takes {}x{} input but the reference {} is set up for {}x{}; drop --input-size or give "
                        "--input-size {}".format(artifact.name, info.preprocess.input_size,
                                                 info.preprocess.input_size, reference.arch, reference.spec.input_size,
                                                 reference.spec.input_size, info.preprocess.input_size))
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
    return notes


def check_weights(artifact: Artifact, reference: Reference, strict: bool = False) -> Optional[str]:
    """One line when the reference's weights are not those the artifact was exported from (the checkpoint
    sha256 in its metadata); with ``strict`` and a --weights file, an error."""
    expected, actual = artifact.info.checkpoint_sha256, reference.checkpoint_sha256
    if expected == actual:
        return None
    exported = "sha256 " + expected[:12] if expected else "random weights"
    if reference.random_weights:
        return "{} was exported from a checkpoint ({}) but the reference has random weights; give --weights".format(
            artifact.name, exported)
    message = "--weights (sha256 {}) is not the checkpoint {} was exported from ({})".format(
        actual[:12], artifact.name, exported)
    if strict:
        raise UserError(message)
    return message + "; --strict makes this an error"


def inspect_artifacts(paths: Sequence[str], reference: Reference) -> Tuple[List[Artifact], List[str]]:
    """Read and check every artifact against ``reference`` before anything is timed, so a mismatch fails fast."""
    artifacts = read_artifacts(paths)
    notes = []
    for artifact in artifacts:
        notes.extend(check_artifact(artifact, reference))
    return artifacts, notes


# -- images ------------------------------------------------------------------------------------------------

def chosen_digests(infos) -> set:
    """Digests of the images that calibrated or judged any of these INT8 models (their metadata records them)."""
    from calibration.api import META_IMAGE_DIGESTS
    return {digest for info in infos for digest in (info.extra or {}).get(META_IMAGE_DIGESTS, "").split()}


def load_images(data_dir, labels_file, spec: PreprocessSpec, num_images: int, seed: int = 0,
                progress: bool = True, num_classes: Optional[int] = None, exclude=None) -> EvalImages:
    """Images from ``data_dir``; without ``data_dir``, the sample photos (unlabeled). A given folder must exist.
    ``exclude``: digests of images that chose a model (``chosen_digests``), left out of a given folder. The images
    come from the end of the order calibrate draws from (data.datasets.measuring_sample), so from a folder with
    room for both, every model listed gets the same unseen images whatever else is listed."""
    from data.datasets import load_dataset

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
                              progress=progress, num_classes=num_classes, exclude=exclude, measuring=True)
        source = os.fspath(data_dir)
        labels = loaded.labels
    if len(loaded.array) == 0:
        raise UserError("no readable images in {}".format(source))
    return EvalImages(np.ascontiguousarray(loaded.array, dtype=np.float32), labels, list(loaded.paths), source,
                      list(loaded.skipped), loaded)


def image_set_name(data_dir) -> str:
    """The name every figure of a run is given for its images (issue 28: one figure per image set, named):
    "unseen" for a folder's images that neither calibrated nor judged a listed model, else the sample photos."""
    return "unseen" if data_dir is not None else "sample photos"


# -- runners -----------------------------------------------------------------------------------------------

def make_runner(artifact: Artifact, options: BenchmarkOptions):
    if artifact.kind == "onnx":
        from deploy.runners import OnnxRuntimeRunner
        providers = ("cuda", "cpu") if options.device == "cuda" else ("cpu",)
        return OnnxRuntimeRunner(artifact.path, providers=providers, threads=options.resolved_threads(),
                                 name=artifact.name)
    from deploy.runners.tensorrt import TensorRTRunner
    return TensorRTRunner(artifact.path, use_cuda_graph=options.cuda_graph)


def reference_runner(reference: Reference, options: BenchmarkOptions):
    """PyTorch (the zoo model or the program), or ONNX Runtime on the FP32 ONNX where there is no PyTorch original."""
    if reference.onnx_path:
        if options.reference_precision != "fp32":
            raise UserError("--reference-precision {}: the reference of an ONNX model from elsewhere is its FP32 "
                            "ONNX".format(options.reference_precision))
        return make_runner(Artifact(reference.onnx_path, "onnx", read_model_info(reference.onnx_path)), options)
    from models.torch_runner import TorchRunner
    return TorchRunner(reference.model, threads=options.resolved_threads(), device=options.device,
                       use_cuda_graph=options.cuda_graph, precision=options.reference_precision, spec=reference.spec,
                       name=reference.label)


def skip_reason(runner, batch_size: int) -> Optional[str]:
    """Why ``runner`` cannot be timed at ``batch_size``, or None."""
    fixed, limit = fixed_batch_size(runner), max_batch_size(runner)
    if fixed and batch_size != fixed:
        return "model has a fixed batch size of {}".format(fixed)
    if limit and batch_size > limit:
        return "beyond the engine's profile (max batch {})".format(limit)
    return None


def compute_logits(runner, images: np.ndarray, options: BenchmarkOptions, bar=None) -> np.ndarray:
    """Logits of every image, after one warm-up call (the backend's first run pays for initialization)."""
    step, pad_to = batch_plan(runner, max(options.batch_sizes))
    warm_up(runner, images[:step], 1, pad_to)
    on_batch = bar.update if bar is not None else None
    return logits_of(infer_all(runner, images, max(options.batch_sizes), on_batch))


def time_backends(runners: Sequence, results: Sequence[BackendResult], images: np.ndarray,
                  options: BenchmarkOptions, bar=None) -> None:
    """Per batch size, time every runner that can take it, the runners taking turns (A, B, A, B, ...). Before
    that the first runner (the reference) is timed alone, to show whether the others disturbed it, and the others
    in turns among themselves, without it: the speed-ups compare those two, each side at its own speed."""
    on_call = bar.update if bar is not None else None
    for batch_size in options.batch_sizes:
        batch = pad_batch(images[:batch_size], batch_size)
        timed = []
        for runner, result in zip(runners, results):
            reason = skip_reason(runner, batch_size)
            if reason is None:
                try:  # the first call at a new shape, alone: a batch an engine refuses fails here, not mid-round
                    warm_up(runner, batch, 1 + options.warmup)
                except (UserError, RuntimeError) as exc:
                    reason = str(exc).splitlines()[0]
            if reason is not None:
                result.skipped_batches[batch_size] = reason
                continue
            timed.append((runner, result))
        if not timed:
            continue
        alone, apart = None, {}
        if timed[0][0] is runners[0] and len(timed) > 1:
            alone = latency_record(time_alone(runners[0], batch, options.iterations), batch_size)
            others = [runner for runner, _ in timed[1:]]
            clocks = time_interleaved(others, [batch] * len(others), options.iterations, warmup=0, on_call=on_call)
            apart = {id(runner): latency_record(wall, batch_size) for runner, (wall, _) in zip(others, clocks)}
        clocks = time_interleaved([r for r, _ in timed], [batch] * len(timed), options.iterations, warmup=0,
                                  on_call=on_call)
        for (runner, result), (wall, compute) in zip(timed, clocks):
            result.timings.append(Timing(batch_size, latency_record(wall, batch_size),
                                         latency_record(compute, batch_size),
                                         alone if runner is runners[0] else None, apart.get(id(runner))))


def disturbed_note(name: str, timing: Timing) -> str:
    check = timing.baseline
    return ("{} batch {}: p50 {:.2f} ms in turns with the other backends against {:.2f} ms alone ({:.2f}x, beyond "
            "{:.2f}x): the baseline is disturbed, so no speed-up is given at this batch size; rerun on a quieter "
            "machine".format(name, timing.batch_size, check["interleaved_p50_ms"], check["alone_p50_ms"],
                             check["ratio"], DISTURBED_BASELINE))


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
    # every backend in turns, and all but the reference once more apart from it (the reference alone is not counted)
    return num_backends * num_images + (2 * num_backends - 1) * sum(options.batch_sizes) * options.iterations


def validate_options(options: BenchmarkOptions) -> None:
    if not options.batch_sizes or any(b < 1 for b in options.batch_sizes):
        raise UserError("batch sizes must be positive integers, got {}".format(list(options.batch_sizes)))
    if options.iterations < 1 or options.warmup < 0:
        raise UserError("need --iterations >= 1 and --warmup >= 0")
    if options.device not in DEVICES:
        raise UserError("device must be one of {}, got {!r}".format(", ".join(DEVICES), options.device))
    if options.reference_precision not in REFERENCE_PRECISIONS:
        raise UserError("reference precision must be one of {}, got {!r}".format(
            ", ".join(REFERENCE_PRECISIONS), options.reference_precision))
    if options.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UserError("--device cuda: PyTorch sees no CUDA GPU on this machine")


def benchmark_engine(artifact_paths: Sequence[str], arch: Optional[str] = None, weights=None, data_dir=None,
                     labels_file=None, input_size: Optional[int] = None, options: Optional[BenchmarkOptions] = None,
                     reference: Optional[Reference] = None, images: Optional[EvalImages] = None) -> BenchmarkResult:
    """Check, then measure parity and speed of each artifact and of the PyTorch reference.

    ``arch`` and ``input_size`` override what the first artifact's metadata says; everything is checked before
    any image is decoded.
    """
    options = options or BenchmarkOptions()
    validate_options(options)
    artifacts = read_artifacts(artifact_paths)
    reference = reference or reference_for(artifacts, arch, weights, input_size)
    check_batch_memory(max(options.batch_sizes), reference.spec.input_size)  # before ONNX Runtime tries it
    notes = []
    for artifact in artifacts:
        notes.extend(check_artifact(artifact, reference))
        mismatch = check_weights(artifact, reference, options.strict)
        if mismatch:
            notes.append(mismatch)
    if images is None:
        images = load_images(data_dir, labels_file, reference.spec, options.num_images, options.seed,
                             options.progress, num_classes=reference.num_classes,
                             exclude=chosen_digests(a.info for a in artifacts))
        notes.extend(images.loaded.notes if images.loaded is not None else [])
    if data_dir is None:
        notes.append("no --data: parity is measured on the {} sample photos, unlabeled".format(len(images.array)))
    if options.cuda_graph and options.device != "cuda" and not any(a.kind == "engine" for a in artifacts):
        notes.append("--cuda-graph applies to TensorRT engines and to PyTorch on --device cuda; nothing used it")
    threads = options.resolved_threads()

    ref_result = BackendResult(reference.label, reference.onnx_path or "", "onnx" if reference.onnx_path else "pytorch",
                               options.reference_precision if not reference.onnx_path else "fp32", {})
    results = [BackendResult(label, a.path, a.kind, a.precision, {})
               for a, label in zip(artifacts, short_labels([a.path for a in artifacts]))]
    runners = [reference_runner(reference, options)]
    runners += [make_runner(artifact, options) for artifact in artifacts]
    bar = _progress_bar(_work_units(len(runners), len(images.array), options), options.progress)
    # Every backend stays loaded, so the timing can interleave them; memory is the price (one model each).
    with ExitStack() as stack:
        stack.callback(bar.close)
        for runner in runners:
            stack.enter_context(runner)
        logits = []
        for runner, result in zip(runners, [ref_result] + results):
            bar.set_description(result.name)
            logits.append(compute_logits(runner, images.array, options, bar))
            # a NaN logit has no agreement, error or cosine (it read "cosine 1.000000"): no report is made of it
            check_finite_outputs(logits[-1], "{}'s logits".format(result.path or result.name), images.paths)
        bar.set_description("timing")
        time_backends(runners, [ref_result] + results, images.array, options, bar)
        for runner, result in zip(runners, [ref_result] + results):
            result.runner = runner.describe()
    score(ref_result, logits[0], None, images.labels)
    for artifact, result, artifact_logits in zip(artifacts, results, logits[1:]):
        score(result, artifact_logits, logits[0], images.labels)
        result.top1_drop = top1_drop(result, ref_result)
        if options.device == "cuda" and result.runner.get("providers") == ["CPUExecutionProvider"]:
            notes.append("{} ran on ONNX Runtime's CPU provider: this onnxruntime has no CUDA provider".format(
                result.name))
    notes.extend("{} batch {}: timing unstable (p90/p50 {:.2f} > {}); rerun on a quieter machine".format(
        result.name, timing.batch_size, timing.latency["spread"], UNSTABLE_SPREAD)
        for result in [ref_result] + results for timing in result.timings if timing.unstable)
    notes.extend(disturbed_note(ref_result.name, timing) for timing in ref_result.timings
                 if timing.baseline and timing.baseline["disturbed"])

    ort = next((r.runner for r in results if r.runner.get("backend") == "onnxruntime"), {})
    ort_settings = {k: ort[k] for k in ("providers", "threads", "graph_optimization_level", "enable_mem_arena",
                                        "allow_spinning") if k in ort}
    if ort_settings:
        ort_settings["inter_op_num_threads"] = 1
    return BenchmarkResult(
        arch=reference.arch,
        weights=os.fspath(weights) if weights else (reference.onnx_path or "random (seed 0)"),
        reference=ref_result,
        artifacts=results,
        data={"source": images.source, "num_images": int(len(images.array)), "labeled": images.labeled,
              "image_set": image_set_name(data_dir),
              "skipped": [list(s) for s in images.skipped], "input_size": reference.spec.input_size},
        options={"batch_sizes": list(options.batch_sizes), "warmup": options.warmup,
                 "iterations": options.iterations, "threads": threads, "device": options.device,
                 "cuda_graph": options.cuda_graph, "seed": options.seed,
                 "reference_precision": options.reference_precision, "interleaved": True},
        environment=collect_environment(threads, ort_settings),
        notes=notes,
    )
