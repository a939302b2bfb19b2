"""The calibrate stage: one calibration pass feeds the INT8 models of every target, the TensorRT calibration
cache, the JSON of the ranges and the FP16 model.

Outputs, for ``-o out/name.onnx`` (or, without it, beside ``model.onnx`` with the stem ``model``):
``name.onnx`` for the first target (``name.int8.<target>.onnx`` for the others, and for all without ``-o``),
``name.calib.cache``, ``name.ranges.json`` and ``name.fp16.onnx``. A ``-o`` stem ending in ``.int8.<target>``
loses that ending for the siblings. The same inputs and seed give byte-identical files.

``method="auto"`` (the default) holds out part of the images (or scores on separate held-out images, given
``holdout_dir``), derives every candidate of
calibration.selection from one pass of statistics over the rest, and keeps per target the candidate whose Q/DQ
model agrees best with FP32 on the held-out images. With an AccuracyGoal the model that misses it gets float
layers (calibration.fallback). The cache and ranges.json carry the ranges chosen for the TensorRT target (the
first target when TensorRT is not asked for).
"""
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from deploy.calib_cache import parse_trt_version, write_calibration_cache
from deploy.errors import UserError
from deploy.fileio import sha256_file, staged_files, write_json
from deploy.trt.version import DEFAULT_TARGET as DEFAULT_TARGET_TRT
from deploy.validate import check_output_files, check_outputs_spare_inputs

from .fallback import AccuracyGoal
from precision.qdq import TARGETS
from .ranges import DEFAULT_PERCENTILE, METHODS
from .selection import AUTO, CANDIDATES, Candidate

METHOD_CHOICES = (AUTO,) + METHODS
DEFAULT_METHOD = AUTO
DEFAULT_TARGET = "tensorrt"
DEFAULT_NUM_IMAGES = 512
DEFAULT_TRT_VERSION = DEFAULT_TARGET_TRT  # the cache is stamped for the same TensorRT a dry-run build plans for

# ONNX metadata keys of an INT8 model that reports show (benchmark-engine, the pipeline report).
META_METHOD = "calibration_method"              # the method whose ranges the model uses (entropy, ..., mse)
META_PERCENTILE = "calibration_percentile"
META_SELECTION = "calibration_selection"        # "auto" (chosen on held-out images) or "explicit"
META_HELDOUT_AGREEMENT = "calibration_heldout_agreement"  # % top-1 agreement with FP32 on the held-out images
META_FLOAT_LAYERS = "float_layers"              # JSON list of the compute layers left in float
META_HELDOUT_SOURCE = "calibration_heldout_source"  # HOLDOUT_SPLIT or HOLDOUT_SEPARATE
# Space-separated digests (data.datasets.image_digest) of every image that calibrated or judged the model: later
# stages leave them out of what measures it, since a figure on the images that chose a model reads high.
META_IMAGE_DIGESTS = "calibration_image_digests"
HOLDOUT_SPLIT = "split"        # held out from the calibration images
HOLDOUT_SEPARATE = "separate"  # images given apart (--holdout-data), none of them a calibration image
DEFAULT_NUM_HOLDOUT_IMAGES = 512


def holdout_sample_size(holdout_dir, requested: Optional[int]) -> int:
    """How many --holdout-data images judge: as many as asked, else half the folder (at most
    DEFAULT_NUM_HOLDOUT_IMAGES), so the other half stays unseen for benchmark-engine and the bundle to measure the
    model on (they leave out the images that judged it)."""
    if requested is not None:
        return int(requested)
    from data.datasets import discover
    return max(1, min(DEFAULT_NUM_HOLDOUT_IMAGES, len(discover(holdout_dir)) // 2))


def judged_on(heldout_source: Optional[str], images: int) -> str:
    """Where an agreement was measured, said beside every figure, by the name of its set: calibration images,
    judging images (they chose the method and the float layers, so they flatter the choice a little), unseen images
    (what benchmark-engine and the bundle measure on; the headline figure). Held out from the calibration images
    it reads high."""
    if heldout_source == HOLDOUT_SEPARATE:
        return "on {} judging images (they chose it; unseen images measure it)".format(images)
    return "on {} judging images held out of the calibration images; reads high".format(images)


def describe_calibration(metadata: Dict[str, str]) -> Optional[str]:
    """One line on how an INT8 model was calibrated, from its ONNX metadata (ModelInfo.extra); None for others.

    For reports: e.g. "percentile 99.99 (auto, 99.51% held-out agreement), 2 float layers: /conv1/Conv, /fc/Gemm".
    """
    method = metadata.get(META_METHOD)
    if not method or "quant_target" not in metadata:
        return None
    name = "percentile {:g}".format(float(metadata[META_PERCENTILE])) if META_PERCENTILE in metadata else method
    how = [metadata.get(META_SELECTION, "explicit")]
    if META_HELDOUT_AGREEMENT in metadata:
        how.append("{}% agreement {}".format(metadata[META_HELDOUT_AGREEMENT], judged_on(
            metadata.get(META_HELDOUT_SOURCE), metadata.get("calibration_heldout_images", "?"))))
    try:
        floats = json.loads(metadata.get(META_FLOAT_LAYERS, "[]"))
    except ValueError:
        floats = []
    text = "{} ({})".format(name, ", ".join(how))
    if floats:
        text += ", {} float layer(s): {}".format(len(floats), ", ".join(floats))
    else:
        text += ", no float layers"
    return text


@dataclass
class TargetOutcome:
    """What calibration settled on for one target."""

    candidate: Candidate
    selection: str                                 # "auto" or "explicit"
    candidates: List[dict] = field(default_factory=list)
    table: List[str] = field(default_factory=list)
    score: Optional[dict] = None                   # held-out score of the written model
    float_layers: List[str] = field(default_factory=list)
    goal_met: Optional[bool] = None
    float_layers_tried: int = 0
    sensitivity: Dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, object]:
        payload = {"method": self.candidate.method, "percentile": self.candidate.percentile,
                   "choice": self.candidate.name, "selection": self.selection, "float_layers": list(self.float_layers)}
        if self.candidates:
            payload["candidates"] = self.candidates
        if self.score is not None:
            payload["heldout"] = self.score
        if self.goal_met is not None:
            payload.update(goal_met=self.goal_met, float_layers_tried=self.float_layers_tried,
                           sensitivity=self.sensitivity)
        return payload


@dataclass
class CalibrationResult:
    int8_models: Dict[str, str]          # target -> path
    calib_cache: str
    ranges_json: str
    fp16_model: Optional[str]
    num_images: int
    skipped: List[Tuple[str, str]]       # (path, reason) of images that could not be decoded
    method: str                          # what the ranges of the cache and ranges.json use
    trt_version: int = 0
    trt_algorithm: str = ""
    percentile: Optional[float] = None
    quantized: Dict[str, dict] = field(default_factory=dict)  # target -> QuantizedModel.to_dict()
    notes: List[str] = field(default_factory=list)
    requested_method: str = DEFAULT_METHOD
    heldout_images: int = 0
    targets: Dict[str, TargetOutcome] = field(default_factory=dict)
    goal: Optional[str] = None
    goal_spec: Optional[AccuracyGoal] = None  # the goal itself, for the "target met" lines
    heldout_source: Optional[str] = None  # HOLDOUT_SPLIT, HOLDOUT_SEPARATE, or None (nothing held out)

    @property
    def missed(self) -> List[str]:
        """Targets whose accuracy goal was missed even with float layers."""
        return [target for target, outcome in self.targets.items() if outcome.goal_met is False]

    def to_dict(self) -> Dict[str, object]:
        return {
            "int8_models": dict(self.int8_models),
            "calib_cache": self.calib_cache,
            "ranges_json": self.ranges_json,
            "fp16_model": self.fp16_model,
            "num_images": self.num_images,
            "heldout_images": self.heldout_images,
            "heldout_source": self.heldout_source,
            "judged_on": judged_on(self.heldout_source, self.heldout_images) if self.heldout_images else None,
            "skipped": [{"path": path, "reason": reason} for path, reason in self.skipped],
            "requested_method": self.requested_method,
            "method": self.method,
            "percentile": self.percentile,
            "targets": {target: outcome.to_dict() for target, outcome in self.targets.items()},
            "goal": self.goal,
            "trt_version": self.trt_version,
            "trt_algorithm": self.trt_algorithm,
            "quantized": self.quantized,
            "notes": list(self.notes),
        }


def calibrate(onnx_path, data_dir=None, labels_file=None, targets: Sequence[str] = (DEFAULT_TARGET,),
              method: str = DEFAULT_METHOD, num_images: int = DEFAULT_NUM_IMAGES, seed: int = 0, workers: int = 2,
              output=None, trt_version=DEFAULT_TRT_VERSION, cache_dir=None, fp16: bool = True,
              percentile: float = DEFAULT_PERCENTILE, progress: bool = True, images=None,
              goal: AccuracyGoal = AccuracyGoal(), max_float_layers: Optional[int] = None,
              holdout_dir=None, holdout_images=None,
              num_holdout_images: Optional[int] = None) -> CalibrationResult:
    """Calibrate the FP32 classifier ``onnx_path`` and write every artifact; see the module docstring.

    ``images``: pre-loaded ``data.datasets.LoadedImages`` (used as given; ``data_dir`` is then not read).
    ``holdout_dir`` / ``holdout_images``: images that only judge the candidates and the goal (e.g. a validation
    split the model never trained on), instead of a split of the calibration images, which then all feed the
    ranges. None of them may be a calibration image.
    ``goal``: an accuracy goal on the held-out images; a missed goal is in ``result.missed`` (not raised), and the
    best model reached is written all the same.
    Raises UserError for bad input (not a classifier, no images, unknown method or target, ...).
    """
    targets = _check_targets(targets)
    if method not in METHOD_CHOICES:
        raise UserError("unknown calibration method {!r}; choose one of {}".format(method, ", ".join(METHOD_CHOICES)))
    trt_number = parse_trt_version(trt_version)
    onnx_path = os.path.abspath(os.fspath(onnx_path))
    paths = artifact_paths(onnx_path, targets, output)
    check_outputs_spare_inputs([("output", path) for path in _written(paths, fp16)] + [("--cache-dir", cache_dir)],
                               [("MODEL", onnx_path), ("--data", data_dir), ("--labels", labels_file),
                                ("--holdout-data", holdout_dir)])
    model, info = load_classifier(onnx_path)
    check_output_files(_written(paths, fp16))  # a folder in the way fails now, before images are decoded
    if images is None:
        if data_dir is None:
            raise UserError("calibration needs images: give a data folder (--data)")
        from data.datasets import load_dataset
        images = load_dataset(data_dir, info.preprocess, labels_file=labels_file, num_images=num_images, seed=seed,
                              workers=workers, cache_dir=cache_dir, progress=progress, num_classes=info.num_classes)
    _check_images(images, info.preprocess.input_size)
    labels = getattr(images, "labels", None)
    notes = list(getattr(images, "notes", []))
    separate = None
    if holdout_images is None and holdout_dir is not None:
        from data.datasets import load_dataset
        holdout_images = load_dataset(holdout_dir, info.preprocess, seed=seed,
                                      num_images=holdout_sample_size(holdout_dir, num_holdout_images),
                                      workers=workers, cache_dir=cache_dir, progress=progress,
                                      num_classes=info.num_classes)
    if holdout_images is not None:
        separate = _separate_holdout(holdout_images, images, info.preprocess.input_size)
        notes.extend(getattr(holdout_images, "notes", []))
    goal.check_labels((labels if separate is None else separate[1]) is not None)

    from .ranges import collect_statistics, ranges_from_statistics
    array = np.ascontiguousarray(images.array, dtype=np.float32)
    heldout = None
    calibration_array = array
    if separate is not None:
        from .selection import HeldOut
        heldout = HeldOut(model, *separate, source=onnx_path)
    elif method == AUTO or goal:
        from .selection import HeldOut, holdout_split
        split = holdout_split(len(array), seed, labels)
        if split.note:
            notes.append(split.note)
        calibration_array = array[split.calibration]
        heldout = HeldOut(model, array[split.holdout], None if labels is None else labels[split.holdout],
                          source=onnx_path)
    candidates = CANDIDATES if method == AUTO else (
        Candidate(method, percentile if method == "percentile" else None),)
    stats, used = collect_statistics(model, calibration_array, progress, source=onnx_path)
    ranges_by_candidate = {c: ranges_from_statistics(model, stats, used, c.method, c.range_percentile, seed)
                           for c in candidates}

    from data.datasets import image_digests
    from precision.qdq import save_model, set_metadata
    digests = " ".join(image_digests(list(getattr(images, "paths", [])) +
                                     list(getattr(holdout_images, "paths", []) if holdout_images is not None else [])))
    protos, quantized, outcomes = {}, {}, {}
    for target in targets:
        model_proto, summary, outcome = _quantize_target(model, ranges_by_candidate, target, heldout, goal,
                                                         max_float_layers, method == AUTO, progress,
                                                         HOLDOUT_SEPARATE if separate is not None else HOLDOUT_SPLIT)
        metadata = _int8_metadata(target, outcome, ranges_by_candidate[outcome.candidate], seed, heldout,
                                  separate is not None)
        metadata[META_IMAGE_DIGESTS] = digests
        set_metadata(model_proto, metadata)
        summary.path = os.path.abspath(paths["int8"][target])
        protos[target] = model_proto
        quantized[target] = summary.to_dict()
        outcomes[target] = outcome
    if heldout is not None and separate is None and _all_agree(outcomes):
        notes.append("every model scored agreed with FP32 on all {} held-out images; if they are training images, "
                     "agreement on unseen ones will be lower, and unseen images (--holdout-data) judge the "
                     "calibration more sharply".format(len(heldout)))

    heldout_source = None if heldout is None else (HOLDOUT_SEPARATE if separate is not None else HOLDOUT_SPLIT)
    cache_target = DEFAULT_TARGET if DEFAULT_TARGET in targets else targets[0]
    ranges = ranges_by_candidate[outcomes[cache_target].candidate]
    report = ranges.to_dict()
    report.update(model=os.path.basename(onnx_path), model_sha256=sha256_file(onnx_path), trt_version=trt_number,
                  targets={target: outcome.to_dict() for target, outcome in outcomes.items()},
                  requested_method=method, ranges_target=cache_target,
                  heldout_images=0 if heldout is None else len(heldout), heldout_source=heldout_source)
    # The artifacts are one set (models, cache and ranges from one pass): staged, then renamed together, so an
    # error or an interrupt leaves the previous set whole instead of new models beside an old cache.
    with staged_files(_written(paths, fp16)) as staged:
        for target in targets:
            save_model(protos[target], staged[paths["int8"][target]])
        write_calibration_cache(staged[paths["cache"]], ranges.scales(), trt_number, ranges.trt_algorithm)
        write_json(staged[paths["ranges"]], report)
        if fp16:
            _write_fp16(model, staged[paths["fp16"]])
    fp16_path = paths["fp16"] if fp16 else None
    return CalibrationResult(
        int8_models=dict(paths["int8"]), calib_cache=paths["cache"], ranges_json=paths["ranges"],
        fp16_model=fp16_path, num_images=ranges.num_images, skipped=list(getattr(images, "skipped", [])),
        method=ranges.method, trt_version=trt_number, trt_algorithm=ranges.trt_algorithm, percentile=ranges.percentile,
        quantized=quantized, notes=notes, requested_method=method,
        heldout_images=0 if heldout is None else len(heldout), targets=outcomes,
        goal=goal.describe() if goal else None, goal_spec=goal if goal else None, heldout_source=heldout_source,
    )


def _quantize_target(model, ranges_by_candidate, target: str, heldout, goal: AccuracyGoal,
                     max_float_layers: Optional[int], auto: bool, progress: bool, heldout_source: str):
    """(onnx.ModelProto, QuantizedModel, TargetOutcome) of one target: the chosen candidate, then fallback."""
    from precision.qdq import build_quantized
    if auto:
        from .selection import format_table, score_candidates
        results, (score, candidate, proto, summary) = score_candidates(model, ranges_by_candidate, target, heldout,
                                                                       progress)
        outcome = TargetOutcome(candidate, "auto", [r.to_dict() for r in results],
                                format_table(target, results, candidate, judged_on(heldout_source, len(heldout))),
                                score.to_dict())
        from precision.qdq import check_quantized
        check_quantized(proto, target)
    else:
        candidate = next(iter(ranges_by_candidate))
        proto, summary = build_quantized(model, ranges_by_candidate[candidate], target)
        score = heldout.score(proto) if heldout is not None else None
        outcome = TargetOutcome(candidate, "explicit", score=None if score is None else score.to_dict())
    if goal:
        from .fallback import fall_back, sensitivity_dict
        result = fall_back(proto, model, heldout, goal, score, max_float_layers)
        proto = result.model
        outcome.score = result.score.to_dict()
        outcome.float_layers = list(result.float_layers)
        outcome.goal_met = result.met
        outcome.float_layers_tried = result.tried
        outcome.sensitivity = sensitivity_dict(result.sensitivity)
        if result.float_layers:
            from precision.qdq import check_quantized
            check_quantized(proto, target)
    return proto, summary, outcome


def _all_agree(outcomes: Dict[str, TargetOutcome]) -> bool:
    """Whether every model scored (auto's candidates, the written models) agreed with FP32 on every held-out
    image."""
    scores = [row for outcome in outcomes.values() for row in outcome.candidates]
    scores += [outcome.score for outcome in outcomes.values() if outcome.score is not None]
    return bool(scores) and all(score["agreement"] >= 100.0 for score in scores)


def _int8_metadata(target: str, outcome: TargetOutcome, ranges, seed: int, heldout, separate: bool) -> Dict[str, str]:
    metadata = {
        "precision": "int8",
        "quant_target": target,
        META_METHOD: outcome.candidate.method,
        META_SELECTION: outcome.selection,
        META_FLOAT_LAYERS: json.dumps(outcome.float_layers),
        "calibration_images": str(ranges.num_images),
        "calibration_seed": str(seed),
    }
    if ranges.percentile is not None:
        metadata[META_PERCENTILE] = repr(float(ranges.percentile))
    if outcome.score is not None:
        metadata[META_HELDOUT_AGREEMENT] = "{:.2f}".format(outcome.score["agreement"])
        metadata["calibration_heldout_images"] = str(len(heldout))
        metadata[META_HELDOUT_SOURCE] = HOLDOUT_SEPARATE if separate else HOLDOUT_SPLIT
    return metadata


def _separate_holdout(holdout, images, size: int):
    """(array, labels) of separate held-out images, checked: the model's input shape, and no calibration image
    among them (that image would feed the ranges it judges)."""
    _check_images(holdout, size, "held-out")
    shared = {os.path.realpath(p) for p in getattr(holdout, "paths", [])} & {
        os.path.realpath(p) for p in getattr(images, "paths", [])}
    if shared:
        raise UserError("{} held-out image(s) are also calibration images, e.g. {}; held-out images must be "
                        "ones the calibration does not use".format(len(shared), sorted(shared)[0]))
    return np.ascontiguousarray(holdout.array, dtype=np.float32), getattr(holdout, "labels", None)


def _check_targets(targets: Sequence[str]) -> List[str]:
    if isinstance(targets, str):
        targets = [targets]
    targets = list(dict.fromkeys(targets))  # drop repeats, keep order
    if not targets:
        raise UserError("give at least one quantization target ({})".format(", ".join(TARGETS)))
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise UserError("unknown quantization target {!r}; choose from {}".format(unknown[0], ", ".join(TARGETS)))
    return targets


def load_classifier(path: str):
    """(onnx.ModelProto, ModelInfo) of an FP32 classifier exported by this tool, or a one-line UserError."""
    import onnx
    from deploy.metadata import read_model_info
    from exporter.attention_forms import to_lean
    if not path.endswith(".onnx"):
        raise UserError("{} is not an .onnx model".format(path))
    info = read_model_info(path)  # UserError when the file or the eca-deploy metadata is missing
    from deploy.metadata import load_onnx_proto
    from deploy.validate import MIN_OPSET, check_onnx_model
    check_onnx_model(load_onnx_proto(path)[1], path, min_opset=MIN_OPSET)  # Q/DQ per channel needs opset 13+
    try:
        model = onnx.load(path)
    except Exception as exc:  # noqa: BLE001  (onnx raises several types for unreadable external data)
        raise UserError("cannot load {}: {}".format(path, str(exc).splitlines()[0][:200] if str(exc) else
                                                    type(exc).__name__)) from None
    # An `export --attention-form nchwc` model carries convs of ones that only help ORT's FP32 layout; Q/DQ
    # placement and accuracy were established on the lean form (INT8 from the nchwc form lost 20 points on the
    # digits test), so calibration always starts from it.
    to_lean(model)
    if info.precision != "fp32":
        raise UserError("{} is already {}; calibrate the FP32 model".format(path, info.precision))
    initializers = {init.name for init in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    outputs = list(model.graph.output)
    if len(inputs) != 1 or len(outputs) != 1 or _rank(inputs[0]) != 4 or _rank(outputs[0]) != 2:
        raise UserError("{} is not a classifier: expected one NCHW input and one 2-D (batch, classes) output".format(
            path))
    if outputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise UserError("{} does not output float32 logits".format(path))
    return model, info


def _rank(value) -> int:
    tensor = value.type.tensor_type
    return len(tensor.shape.dim) if tensor.HasField("shape") else -1


def _check_images(images, size: int, what: str = "calibration") -> None:
    array = images.array
    if array.ndim != 4 or array.shape[1:] != (3, size, size):
        raise UserError("{} images have shape {}, the model expects (N, 3, {}, {})".format(
            what, tuple(array.shape), size, size))
    if len(array) == 0:
        raise UserError("no {} images could be read".format(what))


def artifact_paths(onnx_path: str, targets: Sequence[str], output=None) -> Dict[str, object]:
    """Where each artifact goes: ``output`` for the first target's model, the others named after its stem
    (after the input model's without ``output``)."""
    if output:
        output = os.path.abspath(os.fspath(output))
        directory = os.path.dirname(output)
        stem = os.path.splitext(os.path.basename(output))[0]
        for target in TARGETS:  # -o m.int8.tensorrt.onnx: the siblings are m.int8.cpu.onnx, m.calib.cache, ...
            if stem.endswith(".int8." + target):
                stem = stem[:-len(".int8." + target)]
    else:
        directory = os.path.dirname(onnx_path)
        stem = os.path.splitext(os.path.basename(onnx_path))[0]
    sibling = lambda suffix: os.path.join(directory, stem + suffix)  # noqa: E731
    int8 = {target: sibling(".int8.{}.onnx".format(target)) for target in targets}
    if output:
        int8[targets[0]] = output
    paths = {"int8": int8, "cache": sibling(".calib.cache"), "ranges": sibling(".ranges.json"),
             "fp16": sibling(".fp16.onnx")}
    written = list(int8.values()) + [paths["cache"], paths["ranges"], paths["fp16"]]
    check_outputs_spare_inputs([("output", path) for path in written], [("MODEL", onnx_path)])
    if len(set(written)) != len(written):
        raise UserError("output {} would overwrite another artifact of this run; choose another -o".format(output))
    return paths


def _written(paths: Dict[str, object], fp16: bool) -> List[str]:
    return list(paths["int8"].values()) + [paths["cache"], paths["ranges"]] + ([paths["fp16"]] if fp16 else [])


def _write_fp16(model, path: str) -> str:
    import onnx
    from deploy.fileio import atomic_path
    from precision.fp16 import convert_to_fp16
    with atomic_path(path) as tmp:
        onnx.save(convert_to_fp16(model), tmp)
    return path
