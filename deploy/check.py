"""Check a bundle's models and engines against PyTorch on the device: ``python -m deploy.check [BUNDLE_DIR]``.

The bundle's ``reference.npz`` holds the reference images, the logits the PyTorch original gave for them and,
per bundled model, what it measured on the CPU before bundling and the bar derived from that (see
deploy.reference). Every ONNX model runs in ONNX Runtime and every TensorRT engine (``*.engine``, built on the
device by build_engines.sh) in TensorRT, on those images. Per artifact it prints what was measured, what is
allowed and what was reached (top-1 agreement with PyTorch, logit cosine), and PASS or FAIL. An engine is held to
the bar of the model it was built from. NaN or infinite outputs, a model the manifest lists but the bundle lacks,
and an artifact made from other weights fail too. Exit 1 when any fails, 0 when all that could run pass; an
artifact whose runtime is missing here is SKIP, with the reason.

A PASS means these bytes: every file the proof (or the manifest) records, from the models and their sidecars to
the labels and probe images, must have the sha256 recorded when the bundle was made, and an engine's sidecar must
name a bundled model as its source. Only near ties may change class: an image a model decided on the CPU by more
than its kernel noise must keep that class here (deploy.reference.ArtifactBar.near_ties).

Before any model runs, the device's own decoding and resizing (its Pillow and numpy) preprocess the probe images the
bundle carries, and the largest difference from what the project's preprocessing made of them is a verdict of its
own: it needs no runtime at all (``--preprocessing-only``).

Torch-free and Python 3.8-compatible: numpy and Pillow, plus onnxruntime and/or TensorRT, imported only when used.
"""
import argparse
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .cliutil import add_providers_argument, note, run_main, runner_label
from .schema import dumps_strict
from .compare import compare_logits, describe_images, nonfinite_rows, topk_indices
from .errors import CheckFailedError, UserError
from .fileio import sha256_file
from .filekind import file_kind, is_regular_file
from .manifest import REFERENCE_FILE
from .metadata import SOURCE_ZOO, read_model_info, read_sidecar, reference_origin
from .text import escape_controls
from .validate import MAX_BATCH, check_bound
from .reference import (JPEG_SUFFIXES, JPEG_TOLERANCE_MAX_LEVELS, JPEG_TOLERANCE_MEAN_LEVELS,
                        PREPROCESS_TOLERANCE_LEVELS, SHA256_HEX, ArtifactBar, ReferenceData,
                        bundle_path_ok, load_reference, precision_class)
from .runners.execution import (ENGINE_SUFFIXES, ONNX_SUFFIXES, Clocks, artifact_kind, batch_plan, infer_all,
                                latency_record, logits_of, warm_up)

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
REBUILD = "copy the bundle again as it was made, or rebuild it with `eca-deploy bundle`"


@dataclass
class ArtifactCheck:
    """One model or engine held against the reference; ``status`` is PASS, FAIL or SKIP. Agreements and
    accuracies are percentages, like every --json of the project."""

    name: str
    kind: str                 # "onnx" or "engine"
    precision: str
    status: str
    reasons: List[str] = field(default_factory=list)
    runner: Dict[str, object] = field(default_factory=dict)
    batch_size: Optional[int] = None
    top1_agreement: Optional[float] = None   # percent, reached here
    top5_agreement: Optional[float] = None
    top1_accuracy: Optional[float] = None    # percent, when the reference images are labeled
    max_abs_error: Optional[float] = None
    cosine_similarity: Optional[float] = None
    latency_p50_ms: Optional[float] = None
    latency_p99_ms: Optional[float] = None
    bar: Dict[str, object] = field(default_factory=dict)  # ArtifactBar.to_dict(): measured and required
    notes: List[str] = field(default_factory=list)
    # the near-tie rule (ArtifactBar.near_ties): images this model decided on the CPU within the kernel noise,
    # and the images whose class changed from the CPU's, within that noise (allowed) and above it (a FAIL)
    near_tie_images: Optional[int] = None
    changed_within_noise: Optional[int] = None
    changed_above_noise: Optional[int] = None

    @property
    def passed(self) -> bool:
        return self.status == PASS


@dataclass
class FileCheck:
    """Every file the proof or the manifest binds against the sha256 recorded when the bundle was made."""

    files: int
    status: str
    changed: List[Dict[str, str]] = field(default_factory=list)  # name, recorded, found ("" when missing)
    reasons: List[str] = field(default_factory=list)


@dataclass
class PreprocessCheck:
    """The device's preprocessing of the probe images against the project's; differences in pixel levels."""

    images: int
    status: str
    max_abs_difference: Optional[float] = None   # in model-input units
    max_level_difference: Optional[float] = None  # in 0-255 pixel levels
    tolerance_levels: float = PREPROCESS_TOLERANCE_LEVELS
    reasons: List[str] = field(default_factory=list)
    # per file format ("png", "jpeg", ...): images, largest and worst per-image mean difference in pixel levels
    by_format: Dict[str, Dict[str, float]] = field(default_factory=dict)


@dataclass
class BundleCheck:
    bundle: str
    reference: Dict[str, object]
    artifacts: List[ArtifactCheck]
    preprocessing: PreprocessCheck
    notes: List[str] = field(default_factory=list)
    files: Optional[FileCheck] = None

    @property
    def failed(self) -> List[ArtifactCheck]:
        return [a for a in self.artifacts if a.status == FAIL]

    @property
    def ran(self) -> List[ArtifactCheck]:
        return [a for a in self.artifacts if a.status != SKIP]

    def to_dict(self) -> Dict[str, object]:
        return {"bundle": self.bundle, "reference": self.reference, "preprocessing": asdict(self.preprocessing),
                "files": asdict(self.files) if self.files else None,
                "artifacts": [asdict(a) for a in self.artifacts], "units": "percent",
                "passed": bool(self.ran) and not self.failed and self.preprocessing.status != FAIL and not (
                    self.files and self.files.status == FAIL),
                "notes": list(self.notes)}


# -- finding what to check -----------------------------------------------------------------------------------

def bundle_artifacts(bundle_dir: str) -> List[str]:
    """The ONNX models and TensorRT engines in the bundle's top folder, models first, each group sorted."""
    names = sorted(os.listdir(bundle_dir))
    models = [n for n in names if n.lower().endswith(ONNX_SUFFIXES)]
    engines = [n for n in names if n.lower().endswith(ENGINE_SUFFIXES)]
    return [os.path.join(bundle_dir, n) for n in models + engines]


def missing_listed(bundle_dir: str, present: Sequence[str],
                   reference: Optional[ReferenceData] = None) -> List[ArtifactCheck]:
    """A FAIL for every model the proof holds a bar for or the manifest lists that is not in the bundle: a check
    that silently skips a deleted model would pass a device that runs something else. The proof names its
    models whatever the manifest says, so deleting or emptying the manifest frees nothing."""
    from .manifest import read_manifest
    manifest = read_manifest(bundle_dir)
    names = {os.path.basename(p) for p in present}
    checks = [ArtifactCheck(bar.name, "onnx", bar.precision, FAIL, [
        "the bundle's proof holds its bar (sha256 {}), but it is not in the bundle; {}".format(bar.sha256, REBUILD)])
        for bar in (reference.bars if reference else []) if bar.name not in names]
    named = names | {check.name for check in checks}
    return checks + [ArtifactCheck(name, "onnx", "?", FAIL, ["the bundle's manifest lists it, but it is not in the "
                                                             "bundle"])
                     for name in (manifest or {}).get("models", []) if name not in named]


def check_files(bundle_dir: str, reference: ReferenceData, only: Optional[Sequence[str]] = None) -> FileCheck:
    """Every file the proof or the manifest records (``only``: just these) against the sha256 recorded when the
    bundle was made: a model renamed, re-saved or swapped, a labels file edited, a probe replaced is a FAIL
    naming the file and both digests. The proof's record is the one that binds; the manifest may only agree."""
    from .manifest import read_manifest
    recorded, reasons = dict(reference.files), []
    for name, digest in sorted(((read_manifest(bundle_dir) or {}).get("files") or {}).items()):
        if only is not None and name not in only:
            continue
        if name in recorded and recorded[name] != digest:
            reasons.append("{}: the manifest records sha256 {}, the proof {}; the manifest was edited; {}".format(
                name, digest, recorded[name], REBUILD))
        elif name not in recorded and (not bundle_path_ok(name) or not SHA256_HEX.fullmatch(digest)):
            reasons.append("the manifest records {!r} with sha256 {!r}: not a file of the bundle and its digest; "
                           "{}".format(name, digest, REBUILD))
        elif name not in recorded:
            recorded[name] = digest
    changed = []
    for name, digest in sorted(recorded.items()):
        if only is not None and name not in only:
            continue
        path = os.path.join(bundle_dir, *name.split("/"))
        if not is_regular_file(path):
            changed.append({"name": name, "recorded": digest, "found": ""})
            reasons.append("{} is {} (sha256 {} when the bundle was made); {}".format(
                name, file_kind(path), digest, REBUILD))
            continue
        found = sha256_file(path)
        if found != digest:
            changed.append({"name": name, "recorded": digest, "found": found})
            reasons.append("{} is not the file that was bundled: sha256 {}, recorded {}; {}".format(
                name, found, digest, REBUILD))
    count = len(recorded) if only is None else len([name for name in recorded if name in only])
    return FileCheck(count, FAIL if reasons else PASS, changed, reasons)


def artifact_precision(path: str, info) -> str:
    """An engine's sidecar states the precision it was built with; a model's metadata states its own."""
    if artifact_kind(path) == "engine":
        sidecar = read_sidecar(path) or {}
        if isinstance(sidecar.get("precision"), str):
            return sidecar["precision"]
    return info.precision


def bar_for(path: str, precision: str, reference: ReferenceData) -> Optional[ArtifactBar]:
    """The bar an artifact is held to: a model's own; an engine's is that of the bundled model it was built from
    (by the source sha256 its sidecar records, else by file stem), or of a bundled model of its precision."""
    name = os.path.basename(path)
    if artifact_kind(path) != "engine":
        return reference.bar_named(name)
    source = ((read_sidecar(path) or {}).get("source_onnx") or {})
    bar = reference.bar_with_sha256(str(source.get("sha256", "")))
    stem = name.rsplit(".", 1)[0]
    bar = bar or next((b for b in reference.bars if b.name.rsplit(".", 1)[0] == stem), None)
    if bar is not None and precision_class(bar.precision) == precision_class(precision):
        return bar
    # e.g. an FP16 engine built from the FP32 model: the bundled FP16 model measured what that precision reaches
    same = [b for b in reference.bars if precision_class(b.precision) == precision_class(precision)]
    return same[0] if same else bar


def provenance_problems(info, reference: ReferenceData) -> List[str]:
    """Reasons the artifact cannot be the model the reference logits came from, before anything runs."""
    problems = []
    if reference.arch and info.arch != reference.arch:
        problems.append("it is a {}, the reference is a {}".format(info.arch, reference.arch))
    if info.checkpoint_sha256 != reference.checkpoint_sha256:
        problems.append("it was made from other weights (checkpoint {}) than the reference (checkpoint {})".format(
            info.checkpoint_sha256[:12] or "none: random", reference.checkpoint_sha256[:12] or "none: random"))
    if info.num_classes != reference.logits.shape[1]:
        problems.append("it has {} classes, the reference {}".format(info.num_classes, reference.logits.shape[1]))
    size = reference.inputs.shape[-1]
    if info.preprocess.input_size != size:
        problems.append("it takes {0}x{0} input, the reference inputs are {1}x{1}".format(
            info.preprocess.input_size, size))
    if info.preprocess.normalize_in_graph != reference.spec.normalize_in_graph:
        problems.append("it {} the normalization in its graph and the reference inputs {}".format(
            "has" if info.preprocess.normalize_in_graph else "lacks",
            "are raw pixels" if reference.spec.normalize_in_graph else "are normalized"))
    return problems


# -- running one artifact ------------------------------------------------------------------------------------

def _importable(name: str) -> bool:
    """Whether ``import name`` can work, without importing it (TensorRT takes seconds to import)."""
    import importlib.util
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def make_runner(path: str, providers: Sequence[str]):
    """(runner, None), or (None, why it cannot run here): engines need TensorRT, models ONNX Runtime."""
    if artifact_kind(path) == "engine":
        if not _importable("tensorrt"):
            return None, "TensorRT is not importable here (engines run only where they were built)"
        from .runners.tensorrt import TensorRTRunner
        return TensorRTRunner(path), None
    if not _importable("onnxruntime"):
        return None, "onnxruntime is not installed here (pip install onnxruntime)"
    from .runners.onnxruntime import OnnxRuntimeRunner
    return OnnxRuntimeRunner(path, providers=providers), None


def run_inputs(runner, inputs: np.ndarray, requested_batch: Optional[int]):
    """(logits for every input, batch size, latency record): one untimed warm-up batch, then every batch timed."""
    batch, pad_to = batch_plan(runner, requested_batch or 1)
    warm_up(runner, inputs[:batch], 1, pad_to)  # lazy setup is not timed
    clocks = Clocks(runner)
    logits = logits_of(infer_all(runner, inputs, batch))
    return logits.reshape(len(inputs), -1), batch, latency_record(clocks.wall(), batch)


def binding_problems(path: str, bar: Optional[ArtifactBar], reference: ReferenceData) -> List[str]:
    """Reasons the artifact is not one the proof binds: a model whose bytes are not the bundled model's (renamed,
    re-saved, swapped), or an engine whose sidecar names no bundled model as its source."""
    if bar is not None and bar.floor_only:  # the bundle's own first run, before any bar was measured
        return []
    if artifact_kind(path) != "engine":
        if bar is None or not bar.sha256:
            return []
        found = sha256_file(path)
        if found == bar.sha256:
            return []
        return ["it is not the bundled model: sha256 {}, recorded {}; {}".format(found, bar.sha256, REBUILD)]
    source = str(((read_sidecar(path) or {}).get("source_onnx") or {}).get("sha256", ""))
    if reference.bar_with_sha256(source) is not None:
        return []
    return ["its sidecar names {} as the model it was built from, which is no model of this bundle; build it from "
            "a bundled model with `sh build_engines.sh` (python3 -m deploy.build)".format(
                "sha256 " + source if source else "nothing")]


def check_artifact(path: str, reference: ReferenceData, providers: Sequence[str] = ("cpu",),
                   batch: Optional[int] = None, bar: Optional[ArtifactBar] = None) -> ArtifactCheck:
    """Run one model or engine on the reference inputs and judge it against ``bar`` (default: the one the
    reference holds for it); a broken artifact is a FAIL, not an error."""
    return measure_artifact(path, reference, providers, batch, bar)[0]


def measure_artifact(path: str, reference: ReferenceData, providers: Sequence[str] = ("cpu",),
                     batch: Optional[int] = None,
                     bar: Optional[ArtifactBar] = None) -> Tuple[ArtifactCheck, Optional[np.ndarray]]:
    """check_artifact, and the logits the artifact gave (None when it did not run): the bundle keeps what each
    model gave on the CPU, so the device can tell a near tie from a decided image."""
    from .infer import warn_missing_providers

    name = os.path.basename(path)
    kind = artifact_kind(path)
    try:
        info = read_model_info(path)
    except UserError as exc:
        return ArtifactCheck(name, kind, "?", FAIL, ["cannot read its metadata: {}".format(exc)]), None
    precision = artifact_precision(path, info)
    bar = bar or bar_for(path, precision, reference)
    result = ArtifactCheck(name, kind, precision, FAIL, bar=bar.to_dict() if bar else {})
    binding = binding_problems(path, bar, reference)
    problems = provenance_problems(info, reference) + binding
    if any("classes" in p or "input" in p or "normalization" in p for p in problems):  # it cannot even run
        result.reasons = problems
        return result, None
    runner, missing = make_runner(path, providers)
    if runner is None:  # what the bytes say fails here; the numbers wait for a runtime
        result.status, result.reasons = (FAIL, binding + [missing]) if binding else (SKIP, [missing])
        return result, None
    try:
        with runner:
            warn_missing_providers(runner)
            logits, result.batch_size, latency = run_inputs(runner, reference.inputs, batch)
            result.runner = runner.describe()
    except UserError as exc:
        result.reasons = problems + ["it did not run: {}".format(exc)]
        return result, None
    if logits.shape != reference.logits.shape:
        result.reasons = problems + ["it gave logits of shape {}, the reference {}".format(
            logits.shape, reference.logits.shape)]
        return result, None
    judge(result, reference, logits, problems, bar)
    result.latency_p50_ms, result.latency_p99_ms = latency["p50_ms"], latency["p99_ms"]
    return result, logits


def judge(result: ArtifactCheck, reference: ReferenceData, logits: np.ndarray, problems: List[str],
          bar: Optional[ArtifactBar]) -> None:
    """Fill in the statistics and the verdict against the artifact's bar."""
    reasons = list(problems)
    finite = np.isfinite(logits)
    if not finite.all():  # which reference images (by position), so the fault can be looked at
        reasons.append("reference {} gave NaN or infinite outputs".format(
            describe_images(nonfinite_rows(logits), total=len(logits))))
    comparison = compare_logits(reference.logits, np.where(finite, logits, 0.0))
    result.top1_agreement = 100.0 * comparison.top1_agreement
    result.top5_agreement = 100.0 * comparison.top5_agreement
    result.max_abs_error = comparison.max_abs_error if finite.all() else None  # no number stands for NaN
    result.cosine_similarity = comparison.cosine_similarity
    if reference.labels is not None:
        result.top1_accuracy = 100.0 * float(np.mean(topk_indices(logits, 1)[:, 0] == reference.labels))
    if bar is None:
        reasons.append("the bundle holds no measured bar for it (it was not bundled, nor built from a bundled "
                       "model)")
    elif bar.floor_only:
        reasons += _below_floor(result, bar)
    else:
        if result.top1_agreement < bar.required_top1 - 1e-9:
            reasons.append("top-1 agreement {:.2f}% is below the {:.2f}% allowed ({:.2f}% measured on the CPU, "
                           "less {} image(s) of {} for another backend's kernels{})".format(
                               result.top1_agreement, bar.required_top1, bar.measured_top1,
                               bar.allowance_images, reference.num_images, _floor_text(reference)))
        if not comparison.cosine_similarity >= bar.required_cosine:
            reasons.append("cosine {:.5f} is below the {:.5f} allowed ({:.5f} measured on the CPU)".format(
                comparison.cosine_similarity, bar.required_cosine, bar.measured_cosine))
        reasons += _near_tie_rule(result, reference, np.where(finite, logits, -np.inf), bar)
    result.reasons = reasons
    result.status = FAIL if reasons else PASS


def _near_tie_rule(result: ArtifactCheck, reference: ReferenceData, logits: np.ndarray,
                   bar: ArtifactBar) -> List[str]:
    """Only near ties may change class: an image this model decided on the CPU by more than the kernel noise
    (ArtifactBar.near_ties) that gets another class here is not another order of operations but another model."""
    near = bar.near_ties(reference.logits)
    if near is None:
        return []
    changed = np.argmax(logits, axis=1) != bar.cpu_classes
    above = np.flatnonzero(changed & ~near)
    result.near_tie_images = int(np.sum(near))
    result.changed_within_noise = int(np.sum(changed & near))
    result.changed_above_noise = int(len(above))
    if not len(above):
        return []
    tolerance = bar.near_tie_tolerance(reference.logits)
    shown = ", ".join("#{} (margin {:.3g} > {:.3g})".format(i, float(bar.cpu_margins[i]), float(tolerance[i]))
                      for i in above[:5])
    return ["{} image(s) that this model decided on the CPU above the kernel noise changed class here: {}{}; only "
            "the {} near-tie image(s) may".format(len(above), shown, ", ..." if len(above) > 5 else "",
                                                  result.near_tie_images)]


def _below_floor(result: ArtifactCheck, bar: ArtifactBar) -> List[str]:
    """Reasons a model misses the floor every working model of its precision reaches (deploy.reference.FLOORS)."""
    reasons = []
    if result.top1_agreement < bar.required_top1:
        reasons.append("top-1 agreement {:.2f}% is below the {:.2f}% floor of a working {} model".format(
            result.top1_agreement, bar.required_top1, bar.precision))
    if not result.cosine_similarity >= bar.required_cosine:
        reasons.append("cosine {:.5f} is below the {:.5f} floor of a working {} model".format(
            result.cosine_similarity, bar.required_cosine, bar.precision))
    return reasons


def _floor_text(reference: ReferenceData) -> str:
    return "" if reference.min_agreement is None else "; floor {:.2f}%".format(reference.min_agreement)


# -- the device's preprocessing ------------------------------------------------------------------------------

def check_preprocessing(bundle_dir: str, reference: ReferenceData) -> PreprocessCheck:
    """Decode and preprocess the probe images here, with this device's Pillow and numpy, and compare."""
    from .preprocess import preprocess_file

    if not reference.probe_files:
        return PreprocessCheck(0, SKIP, reasons=["the bundle carries no probe images"])
    spec = reference.spec
    # one model-input unit is std * 255 pixel levels, or one level when the model normalizes in its graph
    levels = np.float64(1.0) if spec.normalize_in_graph else np.asarray(spec.std, np.float64).reshape(3, 1, 1) * 255
    worst_input = 0.0
    reasons: List[str] = []
    by_format: Dict[str, Dict[str, float]] = {}
    for name, expected in zip(reference.probe_files, reference.probe_inputs):
        path = os.path.join(bundle_dir, name)
        try:
            made = preprocess_file(path, spec)
        except UserError as exc:
            reasons.append("{}: {}".format(name, exc))
            continue
        if made.shape != expected.shape:
            reasons.append("{}: preprocessed to {}, the project made {}".format(name, made.shape, expected.shape))
            continue
        difference = np.abs(made.astype(np.float64) - expected)
        worst_input = max(worst_input, float(difference.max()))
        in_levels = difference * levels
        _tally(by_format, probe_format(name), float(in_levels.max()), float(in_levels.mean()))
    for kind, seen in sorted(by_format.items()):
        reasons += _format_problems(kind, seen)
    worst_level = max((seen["max_level_difference"] for seen in by_format.values()), default=0.0)
    return PreprocessCheck(len(reference.probe_files), FAIL if reasons else PASS, worst_input, worst_level,
                           reasons=reasons, by_format=by_format)


def probe_format(name: str) -> str:
    """A probe's file format by its name: "jpeg", "png", ..."""
    lower = name.lower()
    return "jpeg" if lower.endswith(JPEG_SUFFIXES) else (os.path.splitext(lower)[1][1:] or "?")


def _tally(by_format: Dict[str, Dict[str, float]], kind: str, largest: float, mean: float) -> None:
    seen = by_format.setdefault(kind, {"images": 0, "max_level_difference": 0.0, "max_mean_level_difference": 0.0})
    seen["images"] += 1
    seen["max_level_difference"] = max(seen["max_level_difference"], largest)
    seen["max_mean_level_difference"] = max(seen["max_mean_level_difference"], mean)


def _format_problems(kind: str, seen: Dict[str, float]) -> List[str]:
    """Why one format's probes fail (deploy.reference: JPEG decoders differ within a measured margin; other
    formats decode exactly)."""
    if kind == "jpeg":
        if (seen["max_mean_level_difference"] <= JPEG_TOLERANCE_MEAN_LEVELS
                and seen["max_level_difference"] <= JPEG_TOLERANCE_MAX_LEVELS):
            return []
        return ["this device's JPEG decoding differs from the project's by up to {:.2f} pixel levels, {:.2f} on "
                "average over an image (allowed {:g} and {:g}: what libjpeg builds measured, doubled): the engines "
                "would see other inputs than the ones they were checked on; compare Pillow and libjpeg versions"
                .format(seen["max_level_difference"], seen["max_mean_level_difference"],
                        JPEG_TOLERANCE_MAX_LEVELS, JPEG_TOLERANCE_MEAN_LEVELS)]
    if seen["max_level_difference"] <= PREPROCESS_TOLERANCE_LEVELS + 1e-3:  # float32 inputs: 1 level reads 1.00002
        return []
    return ["this device's decoding and resizing of {} differ from the project's by up to {:.2f} pixel levels "
            "(allowed {:g}): the engines would see other inputs than the ones they were checked on; compare Pillow "
            "and numpy versions".format(kind.upper(), seen["max_level_difference"], PREPROCESS_TOLERANCE_LEVELS)]


def check_bundle(bundle_dir: str = ".", providers: Sequence[str] = ("cpu",), batch: Optional[int] = None,
                 progress=None, preprocessing_only: bool = False) -> BundleCheck:
    """Check the preprocessing, then every model and engine in ``bundle_dir`` against its ``reference.npz``."""
    bundle_dir = os.fspath(bundle_dir)
    if not os.path.isdir(bundle_dir):
        raise UserError("no such bundle folder: {}".format(bundle_dir))
    reference = load_reference(os.path.join(bundle_dir, REFERENCE_FILE))
    files = check_files(bundle_dir, reference, only=reference.probe_files if preprocessing_only else None)
    preprocessing = check_preprocessing(bundle_dir, reference)
    if preprocessing_only:
        return BundleCheck(os.path.abspath(bundle_dir), reference.summary(), [], preprocessing, files=files)
    paths = bundle_artifacts(bundle_dir)
    checks = missing_listed(bundle_dir, paths, reference)
    if not paths and not checks:
        raise UserError("{} holds no ONNX models or TensorRT engines".format(bundle_dir))
    for path in paths:
        if progress:
            progress("checking {}".format(os.path.basename(path)))
        checks.append(check_artifact(path, reference, providers, batch))
    notes = []
    summary = dict(reference.summary(), origin=reference_origin(_source_kind(paths)))
    if not any(c.kind == "engine" for c in checks):
        notes.append("no TensorRT engines here yet, so only the ONNX models were checked; `sh build_engines.sh` "
                     "builds them{}".format("" if _importable("tensorrt") else " where TensorRT is installed"))
    return BundleCheck(os.path.abspath(bundle_dir), summary, checks, preprocessing, notes, files)


def _source_kind(paths: Sequence[str]) -> str:
    """What the bundled models were exported from (their metadata's source_kind), for the report's wording."""
    for path in paths:
        try:
            return read_model_info(path).source_kind
        except UserError:
            continue
    return SOURCE_ZOO


# -- the command ---------------------------------------------------------------------------------------------

def _percent(value: Optional[float]) -> str:
    return "-" if value is None else "{:.2f}%".format(value)


def _number(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _table(rows: List[Sequence[str]]) -> List[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def format_preprocessing(check: PreprocessCheck) -> str:
    if check.status == SKIP:
        return "preprocessing: SKIP ({})".format("; ".join(check.reasons))
    formats = ["{} {}: up to {:.2f} levels{} (allowed {})".format(
        seen["images"], kind.upper(), seen["max_level_difference"],
        ", {:.2f} on average".format(seen["max_mean_level_difference"]) if kind == "jpeg" else "",
        "{:g}, {:g} on average".format(JPEG_TOLERANCE_MAX_LEVELS, JPEG_TOLERANCE_MEAN_LEVELS) if kind == "jpeg"
        else "{:g}".format(check.tolerance_levels)) for kind, seen in sorted(check.by_format.items())]
    if not formats:
        formats = ["largest difference {:.2f} pixel levels (allowed {:g})".format(
            check.max_level_difference or 0.0, check.tolerance_levels)]
    return "preprocessing: {} on {} probe images decoded here: {}".format(check.status, check.images,
                                                                          "; ".join(formats))


def format_deepstream_scaling(measured: Dict[str, Dict[str, object]]) -> List[str]:
    """One line per model: the top-1 agreement, with its own predictions on the project's preprocessing, of
    the inputs DeepStream's nvinfer makes (measured on the CPU when bundling), and the geometry its config applies."""
    lines = []
    for model, row in sorted(measured.items()):
        others = ", ".join("{} {:.2f}%{}".format(g, float(v), " (top-1 accuracy {:.2f}%)".format(
            float(row[g + "_top1_accuracy"])) if g + "_top1_accuracy" in row else "")
            for g, v in sorted(row.items()) if g != "applied" and not g.endswith("_top1_accuracy"))
        lines.append("deepstream/{}: nvinfer's own scaling agrees {:.2f}% with the project's preprocessing "
                     "(config applies {}; measured on the CPU: {})".format(
                         os.path.splitext(model)[0] + ".txt", float(row[row["applied"]]), row["applied"], others))
    return lines


def format_files(check: FileCheck) -> str:
    return "files: {} ({} file(s) {} the sha256 recorded when the bundle was made)".format(
        check.status, check.files, "match" if check.status == PASS else "against")


def format_report(report: BundleCheck) -> str:
    ref = report.reference
    origin = ref.get("origin", "PyTorch")
    lines = ["reference: {} images from {} ({}), {} {} logits, {} classes{}".format(
                 ref["images"], ref["source"] or "?", "labeled" if ref["labeled"] else "unlabeled", origin,
                 ref["arch"] or "?",
                 ref["classes"], "" if ref["min_agreement"] is None else "; floor {:.2f}%".format(ref["min_agreement"])),
             format_preprocessing(report.preprocessing)] + ([format_files(report.files)] if report.files else [])
    if report.artifacts:
        rows = [("artifact", "runner", "precision", "top-1 measured", "allowed", "reached", "cosine measured",
                 "allowed", "reached", "kernels", "p50 ms", "verdict")]
        for a in report.artifacts:
            bar = a.bar or {}
            rows.append((a.name, runner_label(a.runner) if a.runner else "-", a.precision, _percent(bar.get("measured_top1_agreement")),
                         _percent(bar.get("required_top1_agreement")), _percent(a.top1_agreement),
                         _number(bar.get("measured_cosine"), "{:.5f}"), _number(bar.get("required_cosine"), "{:.5f}"),
                         _number(a.cosine_similarity, "{:.5f}"), _number(bar.get("allowance_images"), "{} img"),
                         _number(a.latency_p50_ms, "{:.2f}"), a.status))
        lines += _table(rows)
        lines.append("(top-1: agreement with " + origin + "; measured: on the CPU before bundling; kernels: the images the "
                     "device may lose to another backend's kernels; latency per batch, end to end)")
    for a in report.artifacts:
        if a.top1_accuracy is not None:
            lines.append("{}: top-1 accuracy {} on the labeled reference images".format(a.name,
                                                                                       _percent(a.top1_accuracy)))
        if a.near_tie_images is not None:
            lines.append("{}: {} image(s) changed class from the CPU's within the kernel noise (allowed: {} near "
                         "tie(s)), {} above it (allowed: none)".format(a.name, a.changed_within_noise,
                                                                     a.near_tie_images, a.changed_above_noise))
        for reason in a.reasons:
            lines.append("{} {}: {}".format(a.status, a.name, reason))
    for reason in report.preprocessing.reasons if report.preprocessing.status == FAIL else []:
        lines.append("FAIL preprocessing: {}".format(reason))
    for reason in report.files.reasons if report.files else []:
        lines.append("FAIL files: {}".format(reason))
    counts = {status: sum(a.status == status for a in report.artifacts) for status in (PASS, FAIL, SKIP)}
    lines += format_deepstream_scaling(ref.get("deepstream_scaling") or {})
    lines += ["note: " + message for message in report.notes]
    if report.artifacts:
        lines.append("{} passed, {} failed, {} skipped".format(counts[PASS], counts[FAIL], counts[SKIP]))
    # names and reasons carry text from models, proofs and folders: printed as data, never as terminal control
    return "\n".join(escape_controls(line) for line in lines)


def run(args: argparse.Namespace) -> int:
    providers = args.providers
    check_bound("--batch", args.batch, MAX_BATCH)
    progress = None if args.json or not sys.stderr.isatty() else (lambda m: print(m, file=sys.stderr))
    report = check_bundle(args.bundle, providers, args.batch, progress, args.preprocessing_only)
    if not args.json and not args.preprocessing_only and not report.ran and not report.failed:
        raise UserError(nothing_ran(report))  # one line, not a table of SKIPs, notes and then the error
    if args.json:
        print(dumps_strict(report.to_dict(), note))
    else:
        print(format_report(report))
    failed = [a.name for a in report.failed] + (["preprocessing"] if report.preprocessing.status == FAIL else []) \
        + (["bundled files"] if report.files and report.files.status == FAIL else [])
    if failed:
        raise CheckFailedError("{} failed the check against {}: {}".format(
            "{} of {} artifacts".format(len(report.failed), len(report.artifacts)) if report.failed else
            "this device" if report.preprocessing.status == FAIL else "this bundle",
            report.reference.get("origin", "PyTorch"), escape_controls(", ".join(failed))))
    if args.preprocessing_only:
        if report.preprocessing.status != PASS:
            raise UserError("nothing to check: {}".format("; ".join(report.preprocessing.reasons)))
        return 0
    if not report.ran:
        raise UserError(nothing_ran(report))
    return 0


def nothing_ran(report: BundleCheck) -> str:
    """The one line for a device where no artifact could run: what was checked, what was not, and why."""
    reasons = []
    for artifact in report.artifacts:
        reasons += [reason for reason in artifact.reasons if reason not in reasons]
    checked = ("the preprocessing was checked ({}); ".format(report.preprocessing.status)
               if report.preprocessing.status != SKIP else "")
    return "nothing could run here, so none of the {} artifacts was checked against PyTorch: {}; {}install a runtime " \
           "and run deploy.check again".format(len(report.artifacts), "; ".join(reasons), checked)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", default=".", metavar="BUNDLE_DIR",
                        help="the bundle folder (default: the current folder)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout (agreements in percent)")
    parser.add_argument("--batch", type=int, help="images per inference for dynamic-batch models (default 1, at "
                                                  "most {})".format(MAX_BATCH))
    add_providers_argument(parser)
    parser.add_argument("--preprocessing-only", action="store_true",
                        help="only check this device's decoding and resizing of the probe images (no runtime needed)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = make_parser().parse_intermixed_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
