"""`eca-deploy attention`: per-class channel weights of ECA/SE blocks per block and deployed-model parity.

The images stream through in chunks, so a whole validation set is averaged in constant memory. Every model
(the PyTorch model, the one it is compared with, and the deployed ONNX model) sees the same preprocessed
batch, so their numbers are about the same images.
"""
import csv
import io
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

import models
from deploy.compare import compare_logits
from deploy.errors import UserError
from deploy.fileio import write_json, write_text
from deploy.metadata import read_model_info
from deploy.preprocess import PreprocessSpec
from deploy.validate import check_batch_memory
from models.info import num_classes_of, preprocess_for

from .classes import ClassChoice, choose_classes
from .figure import ALL_CLASSES, ModelPanel, plot_attention
from .hooks import AttentionBlock, AttentionRecorder, require_blocks
from .stats import SPREAD_DEFINITION, AttentionParity, ClassMeanAccumulator, ClassMeans, ParityAccumulator

IMAGENET_NUM_CLASSES = 1000

CHUNK_IMAGES = 256  # images decoded at a time; bounds memory independently of the data set size
FILES = {"figure": "attention.png", "json": "attention.json", "csv": "attention.csv",
         "parity_csv": "attention_parity.csv"}


@dataclass
class ModelAttention:
    """One PyTorch model's blocks and per-class means."""

    arch: str
    weights: Optional[str]
    blocks: List[AttentionBlock]
    checkpoint_sha256: str = ""
    means: Optional[ClassMeans] = None
    correct: int = 0
    seen: int = 0

    @property
    def kind(self) -> str:
        return self.blocks[0].kind

    @property
    def accuracy(self) -> Optional[float]:
        return self.correct / self.seen if self.seen else None

    def summary(self) -> Dict[str, object]:
        return {
            "arch": self.arch,
            "weights": self.weights,
            "kind": self.kind,
            "top1_accuracy": self.accuracy,
            "blocks": [dict(b.to_dict(), spread=self.means.spread(b.name),
                            mean_weight=float(self.means.all_class_mean(b.name).mean())) for b in self.blocks],
        }


@dataclass
class AttentionReport:
    models: List[ModelAttention]                 # in figure order: SE above ECA when both are there
    classes: List[ClassChoice]
    num_images: int
    num_classes: int                             # classes with images (the spread is taken over these)
    preprocess: PreprocessSpec
    parity: Optional[AttentionParity] = None
    deployed_accuracy: Optional[float] = None
    skipped: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    files: Dict[str, str] = field(default_factory=dict)

    def to_dict(self, with_weights: bool = False) -> Dict[str, object]:
        payload = {
            "num_images": self.num_images,
            "num_classes": self.num_classes,
            "classes": [c.to_dict() for c in self.classes],
            "preprocess": self.preprocess.to_metadata(),
            "spread_definition": SPREAD_DEFINITION,
            "all_classes_definition": "mean of the per-class means, each class weighted equally",
            "models": [m.summary() for m in self.models],
            "parity": self.parity.to_dict() if self.parity else None,
            "deployed_top1_accuracy": self.deployed_accuracy,
            "skipped": self.skipped,
            "notes": self.notes,
            "files": self.files,
        }
        if with_weights:
            for entry, model in zip(payload["models"], self.models):
                for block_entry, block in zip(entry["blocks"], model.blocks):
                    block_entry["weights"] = {name: _rounded(values) for name, values in
                                              _series(model.means, block, self.classes).items()}
        return payload


def analyze_attention(arch: str, data_dir, weights=None, labels_file=None, classes: Optional[str] = None,
                      num_images: Optional[int] = None, compare: Optional[str] = None, compare_weights=None,
                      deployed=None, out_dir="out/attention", input_size: Optional[int] = None,
                      batch_size: int = 32, workers: int = 2, seed: int = 0, progress: bool = True) -> AttentionReport:
    """Record, average, compare and plot; write the figure, JSON and CSV to ``out_dir``."""
    from data.datasets import discover, stratified_sample

    if batch_size < 1:
        raise UserError("batch size must be positive, got {}".format(batch_size))
    if deployed and not os.fspath(deployed).endswith(".onnx"):
        raise UserError("--deployed takes an ONNX model (FP32, FP16 or INT8 Q/DQ): an engine does not expose its "
                        "intermediate tensors, so compare the ONNX model it was built from")
    notes: List[str] = []
    primary, model = _load(arch, weights, notes)
    info = read_model_info(deployed) if deployed else None
    spec = _resolve_spec(model, arch, input_size, info, primary, notes)
    check_batch_memory(batch_size, spec.input_size, "--batch-size")  # before any image is decoded
    runs = [(primary, model)]
    if compare and program_file(compare, compare_weights):
        raise UserError("--compare takes a zoo model (e.g. se_resnet50), drawn beside MODEL on the same images")
    if compare:
        other, other_model = _load(compare, compare_weights, notes)
        _check_same_preprocessing(other_model, compare, spec)
        runs.append((other, other_model))

    images = discover(data_dir, labels_file)
    notes.extend(images.notes)
    if images.labels is None:
        raise UserError("attention averages per class, so the images need labels: give an ImageFolder tree "
                        "(DIR/<class>/<image>) or --labels FILE")
    if num_images:
        images = stratified_sample(images, num_images, seed)
    chosen = choose_classes(classes, images.class_names, images.labels)
    _check_classes_present(chosen, images.labels)

    parity = ParityAccumulator(primary.blocks) if deployed else None
    skipped, deployed_stats = _stream(runs, images, spec, batch_size, workers, progress, deployed, parity)
    if not primary.seen:
        raise UserError("none of the {} images could be decoded (e.g. {})".format(len(images), skipped[0]))
    report = _report([run for run, _ in runs], chosen, spec, notes, skipped, parity, deployed, deployed_stats)
    _warn_near_chance(report)
    _write_outputs(report, out_dir)
    return report


# -- models and preprocessing -----------------------------------------------------------------------------

def program_file(arch: str, weights) -> Optional[str]:
    """The .pt2 / TorchScript file among MODEL and --weights, when one of them is one."""
    from models.program import is_program
    if os.path.isfile(arch) and is_program(arch):
        if weights is not None:
            raise UserError("{} is a program with its own weights; drop --weights".format(arch))
        return arch
    if weights is not None and is_program(weights):
        return os.fspath(weights)
    return None


def _load_program(path: str):
    from models.program import load_program

    from .program import GateRecordingProgram, find_program_gates
    program = load_program(path)
    blocks = find_program_gates(program)
    return ModelAttention(program.name, path, blocks, program.sha256), GateRecordingProgram(program, blocks)


def _load(arch: str, weights, notes: List[str]):
    program = program_file(arch, weights)
    if program is not None:
        return _load_program(program)
    model, checkpoint = models.load_model(arch, weights)
    if checkpoint is None:
        notes.append("no weights given for {}: it has random weights (seed 0), so its attention means nothing"
                     .format(arch))
    run = ModelAttention(arch, os.fspath(weights) if weights else None, require_blocks(model, arch),
                         checkpoint.sha256 if checkpoint else "")
    return run, model


def _resolve_spec(model, arch: str, input_size: Optional[int], info, run: ModelAttention,
                  notes: List[str]) -> PreprocessSpec:
    if not hasattr(model, "preprocess"):  # a program records no preprocessing; the ONNX exported from it does
        return _program_spec(run, input_size, info)
    if info is None:
        if input_size:
            return preprocess_for(model, input_size)
        classes = num_classes_of(model)
        if classes != IMAGENET_NUM_CLASSES:
            # The zoo's 224 px is ImageNet's; a checkpoint trained elsewhere says nothing of its size, and a wrong
            # size gives a plot that looks fine but means nothing.
            raise UserError("{} has {} classes, so it was not trained on ImageNet at {} px and its input size is "
                            "unknown: give --input-size N (the size it was trained at) or --deployed MODEL.onnx"
                            .format(arch, classes, model.preprocess.input_size))
        return model.preprocess
    if info.arch != arch:
        raise UserError("the deployed model is {}, not {}".format(info.arch, arch))
    spec = info.preprocess
    if input_size and input_size != spec.input_size:
        raise UserError("--input-size {} differs from the deployed model's input size {}".format(
            input_size, spec.input_size))
    if preprocess_for(model, spec.input_size) != spec:
        raise UserError("the deployed model's preprocessing ({}) differs from {}'s own ({})".format(
            spec, arch, preprocess_for(model, spec.input_size)))
    if info.checkpoint_sha256 != run.checkpoint_sha256:
        notes.append("the deployed model was exported from other weights (checkpoint sha256 {} vs {}); its "
                     "differences may come from the weights, not from its precision".format(
                         info.checkpoint_sha256[:12] or "none (random)", run.checkpoint_sha256[:12] or "none (random)"))
    return spec


def _program_spec(run: ModelAttention, input_size: Optional[int], info) -> PreprocessSpec:
    if info is None:
        raise UserError("{} records no preprocessing: give --deployed MODEL.onnx, the model exported from it "
                        "(its metadata carries the preprocessing)".format(run.weights))
    if info.arch != run.arch or info.checkpoint_sha256 != run.checkpoint_sha256:
        raise UserError("the deployed model was not exported from {} (sha256 {} vs {})".format(
            run.weights, info.checkpoint_sha256[:12] or "none", run.checkpoint_sha256[:12]))
    if input_size and input_size != info.preprocess.input_size:
        raise UserError("--input-size {} differs from the deployed model's input size {}".format(
            input_size, info.preprocess.input_size))
    return info.preprocess


def _check_same_preprocessing(model, arch: str, spec: PreprocessSpec) -> None:
    if preprocess_for(model, spec.input_size) != spec:
        raise UserError("{} preprocesses images differently ({}) from the first model ({}); both must see the "
                        "same images".format(arch, preprocess_for(model, spec.input_size), spec))


def _check_classes_present(chosen: Sequence[ClassChoice], labels: Sequence[int]) -> None:
    present = set(int(label) for label in labels)
    missing = [c.display for c in chosen if c.index not in present]
    if missing:
        raise UserError("no images of class {} among the {} images; choose other --classes or more --num-images"
                        .format(", ".join(missing), len(labels)))


# -- the pass over the images -----------------------------------------------------------------------------

def _stream(runs, images, spec, batch_size, workers, progress, deployed, parity):
    """Feed every batch to every model; set each run's class means and accuracy, accumulate parity.

    Returns (skipped files, deployed-model statistics or None).
    """
    from data.datasets import load_images
    from deploy.progress import progress_bar

    accumulators = [ClassMeanAccumulator([b.name for b in run.blocks]) for run, _ in runs]
    logits_stats = _LogitStats() if deployed else None
    bar = progress_bar(len(images), desc="attention", enabled=progress)
    recorders = [_recorder(model, run.blocks) for run, model in runs]
    deployed_ctx = _deployed(deployed, runs[0][0].blocks)
    skipped = []
    with bar, deployed_ctx as onnx_model:
        for start in range(0, len(images), CHUNK_IMAGES):
            chunk = load_images(images.subset(range(start, min(start + CHUNK_IMAGES, len(images)))), spec,
                                workers=workers, use_cache=False, progress=False)
            skipped.extend("{} ({})".format(path, reason) for path, reason in chunk.skipped)
            for offset in range(0, len(chunk), batch_size):
                batch = chunk.array[offset:offset + batch_size]
                labels = chunk.labels[offset:offset + batch_size]
                reference = _run_models(runs, recorders, accumulators, batch, labels)
                if onnx_model is not None:
                    logits, weights = onnx_model.infer(batch)
                    _check_deployed_finite(deployed, logits, weights, chunk.paths[offset:offset + batch_size])
                    parity.update(reference[1], weights)
                    logits_stats.update(reference[0], logits, labels)
            bar.update(len(chunk) + len(chunk.skipped))
        stats = None if onnx_model is None else {
            "logits": logits_stats.result(), "providers": onnx_model.active_providers,
            "precision": onnx_model.precision}
    for (run, _), accumulator in zip(runs, accumulators):
        run.means = accumulator.result()
    return skipped, stats


def _check_deployed_finite(path, logits, weights, names) -> None:
    """A NaN in the deployed model's outputs would compare as no error at all (NaN > x is false, so the running
    maximum stays 0): CheckFailedError naming the images instead, before any parity is reported."""
    from deploy.compare import check_finite_outputs
    check_finite_outputs(logits, "the deployed model {}'s logits".format(path), names)
    for block, values in (weights.items() if isinstance(weights, dict) else enumerate(weights)):
        check_finite_outputs(values, "the deployed model {}'s attention weights of {}".format(path, block), names)
def _recorder(model, blocks):
    """Forward hooks on a zoo model's modules; a program's gates are kept while its graph runs."""
    from .program import GateRecordingProgram, ProgramRecorder
    if isinstance(model, GateRecordingProgram):
        return ProgramRecorder(model)
    return AttentionRecorder(model, blocks)


def _run_models(runs, recorders, accumulators, batch, labels):
    import torch

    first = None
    for (run, model), recorder, accumulator in zip(runs, recorders, accumulators):
        with recorder, torch.no_grad():
            logits = model(torch.from_numpy(batch)).numpy()
            weights = recorder.pop()
        accumulator.update(weights, labels)
        run.correct += int(np.sum(np.argmax(logits, axis=1) == labels))
        run.seen += len(labels)
        if first is None:
            first = (logits, weights)
    return first


class _NoDeployed:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _deployed(path, blocks):
    if not path:
        return _NoDeployed()
    from .deployed import DeployedAttention
    return DeployedAttention(path, blocks)


class _LogitStats:
    """deploy.compare statistics over all batches, weighted by batch size, plus accuracy against the labels."""

    def __init__(self):
        self.count = self.correct = 0
        self.max_abs_error = 0.0
        self.sums = {"mean_abs_error": 0.0, "cosine_similarity": 0.0, "top1_agreement": 0.0, "top5_agreement": 0.0}

    def update(self, reference, candidate, labels):
        result = compare_logits(reference, candidate)
        self.max_abs_error = max(self.max_abs_error, result.max_abs_error)
        for key in self.sums:
            self.sums[key] += getattr(result, key) * len(reference)
        self.count += len(reference)
        self.correct += int(np.sum(np.argmax(candidate, axis=1) == labels))

    def result(self) -> Dict[str, object]:
        stats = {key: value / max(self.count, 1) for key, value in self.sums.items()}
        stats.update(max_abs_error=self.max_abs_error, num_images=self.count,
                     top1_accuracy=self.correct / self.count if self.count else None)
        return stats


# -- the report and its files -----------------------------------------------------------------------------

def _report(runs, chosen_ids, spec, notes, skipped, parity_acc, deployed, deployed_stats) -> AttentionReport:
    primary = runs[0]
    means = primary.means
    classes = [c.with_count(means.count(c.index) if c.index in means.class_ids else 0) for c in chosen_ids]
    missing = [c.display for c in classes if c.count == 0]
    if missing:  # every image of the class failed to decode
        raise UserError("no readable images of class {}; choose other --classes".format(", ".join(missing)))
    report = AttentionReport(_figure_order(runs), classes, primary.seen, len(means.class_ids), spec,
                             skipped=skipped, notes=notes)
    if parity_acc is not None:
        logits = dict(deployed_stats["logits"])
        report.deployed_accuracy = logits.pop("top1_accuracy")
        report.parity = AttentionParity(os.fspath(deployed), deployed_stats["precision"], parity_acc.rows(),
                                        logits, deployed_stats["providers"])
    return report


def _warn_near_chance(report: AttentionReport) -> None:
    """A wrong input size or a label order that is not the model's shows as chance accuracy; say so."""
    chance = 1.0 / max(report.num_classes, 1)
    for model in report.models:
        if report.num_images >= 20 and model.accuracy is not None and model.accuracy < 2 * chance:
            report.notes.append(
                "{} gets {:.1%} top-1 on these labels (chance is {:.1%}): check --input-size (now {}) and that the "
                "class indices are the model's".format(model.arch, model.accuracy, chance,
                                                       report.preprocess.input_size))


def _figure_order(runs: List[ModelAttention]) -> List[ModelAttention]:
    """The seed puts SE on top and ECA below; otherwise the models keep the order given."""
    if len(runs) == 2 and runs[0].kind == "eca" and runs[1].kind == "se":
        return [runs[1], runs[0]]
    return runs


def _series(means: ClassMeans, block: AttentionBlock, classes: Sequence[ClassChoice]) -> Dict[str, np.ndarray]:
    series = {c.display: means.class_mean(block.name, c.index) for c in classes}
    series[ALL_CLASSES] = means.all_class_mean(block.name)
    return series


def _rounded(values: np.ndarray) -> List[float]:
    return [round(float(v), 6) for v in values]


def _write_outputs(report: AttentionReport, out_dir) -> None:
    out_dir = os.fspath(out_dir)
    report.files = {key: os.path.join(out_dir, name) for key, name in FILES.items()}
    if report.parity is None:
        del report.files["parity_csv"]
    series_names = [c.display for c in report.classes] + [ALL_CLASSES]
    panels = [ModelPanel("{} ({})".format(m.kind.upper(), m.arch),
                         {b.label: _series(m.means, b, report.classes) for b in m.blocks}) for m in report.models]
    title = "Channel weights per class, averaged over {} images".format(report.num_images)
    plot_attention(report.files["figure"], panels, series_names, title)
    write_text(report.files["csv"], _weights_csv(report))
    if report.parity is not None:
        write_text(report.files["parity_csv"], _parity_csv(report.parity))
    write_json(report.files["json"], report.to_dict(with_weights=True))


def _weights_csv(report: AttentionReport) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "kind", "block", "label", "series", "class_index", "num_images", "channel", "weight"])
    for model in report.models:
        for block in model.blocks:
            for choice in list(report.classes) + [None]:
                name = choice.display if choice else ALL_CLASSES
                values = _series(model.means, block, report.classes)[name]
                index = choice.index if choice else ""
                count = choice.count if choice else report.num_images
                for channel, value in enumerate(values):
                    writer.writerow([model.arch, model.kind, block.name, block.label, name, index, count, channel,
                                     "{:.6f}".format(value)])
    return buffer.getvalue()


def _parity_csv(parity: AttentionParity) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "block", "label", "channels", "max_abs_diff", "mean_abs_diff", "num_images"])
    for rank, row in enumerate(parity.blocks, 1):
        writer.writerow([rank, row.name, row.label, row.channels, "{:.6g}".format(row.max_abs_diff),
                         "{:.6g}".format(row.mean_abs_diff), row.num_images])
    return buffer.getvalue()
