"""Check a bundle's models and engines against PyTorch on the device: ``python -m deploy.check [BUNDLE_DIR]``.

The bundle's ``reference.npz`` holds preprocessed inputs and the logits the PyTorch original gave for them
(see deploy.reference). Every ONNX model runs in ONNX Runtime and every TensorRT engine (``*.engine``, built
on the device by build_engines.sh) in TensorRT, on those inputs. Per artifact: top-1 and top-5 agreement with
PyTorch, max abs error, cosine similarity, latency p50/p99, and PASS or FAIL against the tolerance stored for
its precision. An artifact made from other weights than the reference fails too. Exit 1 when any fails, 0 when
all that could run pass; an artifact whose runtime is missing here is SKIP, with the reason.

Torch-free and Python 3.8-compatible: numpy, plus onnxruntime and/or TensorRT, imported only when used.
"""
import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from .cliutil import run_main
from .compare import compare_logits, topk_indices
from .errors import CheckFailedError, UserError
from .metadata import read_model_info, read_sidecar
from .reference import REFERENCE_FILE, ReferenceData, load_reference
from .runners.execution import (ENGINE_SUFFIXES, ONNX_SUFFIXES, Clocks, artifact_kind, batch_plan, infer_all,
                                latency_record, logits_of, warm_up)

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass
class ArtifactCheck:
    """One model or engine held against the reference; ``status`` is PASS, FAIL or SKIP."""

    name: str
    kind: str                 # "onnx" or "engine"
    precision: str
    status: str
    reasons: List[str] = field(default_factory=list)
    runner: Dict[str, object] = field(default_factory=dict)
    batch_size: Optional[int] = None
    top1_agreement: Optional[float] = None  # fractions in [0, 1]
    top5_agreement: Optional[float] = None
    top1_accuracy: Optional[float] = None   # when the reference images are labeled
    max_abs_error: Optional[float] = None
    cosine_similarity: Optional[float] = None
    latency_p50_ms: Optional[float] = None
    latency_p99_ms: Optional[float] = None
    tolerance: Dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == PASS


@dataclass
class BundleCheck:
    bundle: str
    reference: Dict[str, object]
    artifacts: List[ArtifactCheck]
    notes: List[str] = field(default_factory=list)

    @property
    def failed(self) -> List[ArtifactCheck]:
        return [a for a in self.artifacts if a.status == FAIL]

    @property
    def ran(self) -> List[ArtifactCheck]:
        return [a for a in self.artifacts if a.status != SKIP]

    def to_dict(self) -> Dict[str, object]:
        return {"bundle": self.bundle, "reference": self.reference,
                "artifacts": [asdict(a) for a in self.artifacts],
                "passed": bool(self.ran) and not self.failed, "notes": list(self.notes)}


# -- finding what to check -----------------------------------------------------------------------------------

def bundle_artifacts(bundle_dir: str) -> List[str]:
    """The ONNX models and TensorRT engines in the bundle's top folder, models first, each group sorted."""
    names = sorted(os.listdir(bundle_dir))
    models = [n for n in names if n.lower().endswith(ONNX_SUFFIXES)]
    engines = [n for n in names if n.lower().endswith(ENGINE_SUFFIXES)]
    return [os.path.join(bundle_dir, n) for n in models + engines]


def artifact_precision(path: str, info) -> str:
    """An engine's sidecar states the precision it was built with; a model's metadata states its own."""
    if artifact_kind(path) == "engine":
        sidecar = read_sidecar(path) or {}
        if isinstance(sidecar.get("precision"), str):
            return sidecar["precision"]
    return info.precision


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
        return None, "onnxruntime is not installed here (pip install onnxruntime); its engine is checked instead"
    from .runners.onnxruntime import OnnxRuntimeRunner
    return OnnxRuntimeRunner(path, providers=providers), None


def run_inputs(runner, inputs: np.ndarray, requested_batch: Optional[int]):
    """(logits for every input, batch size, latency record): one untimed warm-up batch, then every batch timed."""
    batch, pad_to = batch_plan(runner, requested_batch or 1)
    warm_up(runner, inputs[:batch], 1, pad_to)  # lazy setup is not timed
    clocks = Clocks(runner)
    logits = logits_of(infer_all(runner, inputs, batch))
    return logits.reshape(len(inputs), -1), batch, latency_record(clocks.wall(), batch)


def check_artifact(path: str, reference: ReferenceData, providers: Sequence[str] = ("cpu",),
                   batch: Optional[int] = None) -> ArtifactCheck:
    """Run one model or engine on the reference inputs and judge it; a broken artifact is a FAIL, not an error."""
    name = os.path.basename(path)
    kind = artifact_kind(path)
    try:
        info = read_model_info(path)
    except UserError as exc:
        return ArtifactCheck(name, kind, "?", FAIL, ["cannot read its metadata: {}".format(exc)])
    precision = artifact_precision(path, info)
    result = ArtifactCheck(name, kind, precision, FAIL, tolerance=dict(reference.tolerance(precision)))
    problems = provenance_problems(info, reference)
    if any("classes" in p or "input" in p for p in problems):  # it cannot even run on the reference inputs
        result.reasons = problems
        return result
    runner, missing = make_runner(path, providers)
    if runner is None:
        result.status, result.reasons = SKIP, [missing]
        return result
    try:
        with runner:
            logits, result.batch_size, latency = run_inputs(runner, reference.inputs, batch)
            result.runner = runner.describe()
    except UserError as exc:
        result.reasons = problems + ["it did not run: {}".format(exc)]
        return result
    if logits.shape != reference.logits.shape:
        result.reasons = problems + ["it gave logits of shape {}, the reference {}".format(
            logits.shape, reference.logits.shape)]
        return result
    judge(result, compare_logits(reference.logits, logits), reference, logits, problems)
    result.latency_p50_ms, result.latency_p99_ms = latency["p50_ms"], latency["p99_ms"]
    return result


def judge(result: ArtifactCheck, comparison, reference: ReferenceData, logits: np.ndarray,
          problems: List[str]) -> None:
    """Fill in the statistics and the verdict against the tolerance stored for the artifact's precision."""
    result.top1_agreement = comparison.top1_agreement
    result.top5_agreement = comparison.top5_agreement
    result.max_abs_error = comparison.max_abs_error
    result.cosine_similarity = comparison.cosine_similarity
    if reference.labels is not None:
        result.top1_accuracy = float(np.mean(topk_indices(logits, 1)[:, 0] == reference.labels))
    reasons = list(problems)
    tolerance = result.tolerance
    if comparison.top1_agreement < tolerance["min_top1_agreement"]:
        reasons.append("top-1 agreement {:.1%} is below {:.1%}".format(comparison.top1_agreement,
                                                                      tolerance["min_top1_agreement"]))
    if not comparison.cosine_similarity >= tolerance["min_cosine"]:  # NaN logits fail too
        reasons.append("cosine {:.5f} is below {:.5f}".format(comparison.cosine_similarity, tolerance["min_cosine"]))
    result.reasons = reasons
    result.status = FAIL if reasons else PASS


def check_bundle(bundle_dir: str = ".", providers: Sequence[str] = ("cpu",), batch: Optional[int] = None,
                 progress=None) -> BundleCheck:
    """Check every model and engine in ``bundle_dir`` against its ``reference.npz``."""
    bundle_dir = os.fspath(bundle_dir)
    if not os.path.isdir(bundle_dir):
        raise UserError("no such bundle folder: {}".format(bundle_dir))
    reference = load_reference(os.path.join(bundle_dir, REFERENCE_FILE))
    paths = bundle_artifacts(bundle_dir)
    if not paths:
        raise UserError("{} holds no ONNX models or TensorRT engines".format(bundle_dir))
    checks = []
    for path in paths:
        if progress:
            progress("checking {}".format(os.path.basename(path)))
        checks.append(check_artifact(path, reference, providers, batch))
    summary = {"images": int(len(reference.inputs)), "input_shape": list(reference.inputs.shape[1:]),
               "classes": int(reference.logits.shape[1]), "labeled": reference.labels is not None,
               "arch": reference.arch, "checkpoint_sha256": reference.checkpoint_sha256, "source": reference.source,
               "tolerances": reference.tolerances}
    notes = []
    if not any(c.kind == "engine" for c in checks):
        notes.append("no TensorRT engines here yet, so only the ONNX models were checked; `sh build_engines.sh` "
                     "builds them{}".format("" if _importable("tensorrt") else " where TensorRT is installed"))
    return BundleCheck(os.path.abspath(bundle_dir), summary, checks, notes)


# -- the command ---------------------------------------------------------------------------------------------

def _percent(value: Optional[float]) -> str:
    return "-" if value is None else "{:.1f}%".format(100.0 * value)


def _number(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _runner_label(check: ArtifactCheck) -> str:
    runner = check.runner
    if not runner:
        return "-"
    providers = runner.get("providers")
    if providers:
        return "onnxruntime " + "+".join(str(p).replace("ExecutionProvider", "") for p in providers)
    return str(runner.get("backend", "-"))


def format_report(report: BundleCheck) -> str:
    ref = report.reference
    lines = ["reference: {} images from {} ({}), PyTorch {} logits, {} classes".format(
        ref["images"], ref["source"] or "?", "labeled" if ref["labeled"] else "unlabeled", ref["arch"] or "?",
        ref["classes"])]
    rows = [("artifact", "runner", "precision", "top-1", "top-5", "max|err|", "cosine", "p50 ms", "p99 ms", "verdict")]
    for a in report.artifacts:
        rows.append((a.name, _runner_label(a), a.precision, _percent(a.top1_agreement), _percent(a.top5_agreement),
                     _number(a.max_abs_error, "{:.3g}"), _number(a.cosine_similarity, "{:.5f}"),
                     _number(a.latency_p50_ms, "{:.2f}"), _number(a.latency_p99_ms, "{:.2f}"), a.status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.append("(top-1/top-5: agreement with PyTorch; latency per batch, end to end)")
    for a in report.artifacts:
        if a.top1_accuracy is not None:
            lines.append("{}: top-1 accuracy {} on the labeled reference images".format(a.name,
                                                                                       _percent(a.top1_accuracy)))
        for reason in a.reasons:
            lines.append("{} {}: {}".format(a.status, a.name, reason))
    counts = {status: sum(a.status == status for a in report.artifacts) for status in (PASS, FAIL, SKIP)}
    lines += ["note: " + message for message in report.notes]
    lines.append("{} passed, {} failed, {} skipped".format(counts[PASS], counts[FAIL], counts[SKIP]))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    if args.batch is not None and args.batch < 1:
        raise UserError("--batch must be at least 1, got {}".format(args.batch))
    progress = None if args.json or not sys.stderr.isatty() else (lambda m: print(m, file=sys.stderr))
    report = check_bundle(args.bundle, providers, args.batch, progress)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(format_report(report))
    if report.failed:
        raise CheckFailedError("{} of {} artifacts failed the check against PyTorch: {}".format(
            len(report.failed), len(report.artifacts), ", ".join(a.name for a in report.failed)))
    if not report.ran:
        raise UserError("nothing could run here: {}".format(report.artifacts[0].reasons[0]))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", default=".", metavar="BUNDLE_DIR",
                        help="the bundle folder (default: the current folder)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--batch", type=int, help="images per inference for dynamic-batch models (default 1)")
    parser.add_argument("--providers", default="cpu", help="ONNX Runtime providers for the .onnx models, "
                                                           "comma-separated: cpu, cuda, tensorrt (default cpu)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = make_parser().parse_intermixed_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
