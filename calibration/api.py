"""The calibrate stage: one calibration pass feeds the INT8 models of every target, the TensorRT calibration
cache, the JSON of the ranges and the FP16 model.

Outputs (default: beside the FP32 model; with ``output``, in its folder), for ``model.onnx``:
``model.int8.<target>.onnx`` (or ``output`` for the first target), ``model.calib.cache``,
``model.ranges.json`` and ``model.fp16.onnx``. The same inputs and seed give byte-identical files.
"""
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from deploy.calib_cache import parse_trt_version, write_calibration_cache
from deploy.errors import UserError
from deploy.fileio import sha256_file, staged_files, write_json
from deploy.validate import check_output_files

from .qdq import TARGETS
from .ranges import DEFAULT_METHOD, DEFAULT_PERCENTILE, METHODS

DEFAULT_NUM_IMAGES = 512
DEFAULT_TRT_VERSION = "8.6"


@dataclass
class CalibrationResult:
    int8_models: Dict[str, str]          # target -> path
    calib_cache: str
    ranges_json: str
    fp16_model: Optional[str]
    num_images: int
    skipped: List[Tuple[str, str]]       # (path, reason) of images that could not be decoded
    method: str
    trt_version: int = 0
    trt_algorithm: str = ""
    percentile: Optional[float] = None
    quantized: Dict[str, dict] = field(default_factory=dict)  # target -> QuantizedModel.to_dict()
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        return {
            "int8_models": dict(self.int8_models),
            "calib_cache": self.calib_cache,
            "ranges_json": self.ranges_json,
            "fp16_model": self.fp16_model,
            "num_images": self.num_images,
            "skipped": [{"path": path, "reason": reason} for path, reason in self.skipped],
            "method": self.method,
            "percentile": self.percentile,
            "trt_version": self.trt_version,
            "trt_algorithm": self.trt_algorithm,
            "quantized": self.quantized,
            "notes": list(self.notes),
        }


def calibrate(onnx_path, data_dir=None, labels_file=None, targets: Sequence[str] = ("tensorrt",),
              method: str = DEFAULT_METHOD, num_images: int = DEFAULT_NUM_IMAGES, seed: int = 0, workers: int = 2,
              output=None, trt_version=DEFAULT_TRT_VERSION, cache_dir=None, fp16: bool = True,
              percentile: float = DEFAULT_PERCENTILE, progress: bool = True, images=None) -> CalibrationResult:
    """Calibrate the FP32 classifier ``onnx_path`` and write every artifact; see the module docstring.

    ``images``: pre-loaded ``calibration.data.LoadedImages`` (used as given; ``data_dir`` is then not read).
    Raises UserError for bad input (not a classifier, no images, unknown method or target, ...).
    """
    targets = _check_targets(targets)
    if method not in METHODS:
        raise UserError("unknown calibration method {!r}; choose one of {}".format(method, ", ".join(METHODS)))
    trt_number = parse_trt_version(trt_version)
    onnx_path = os.path.abspath(os.fspath(onnx_path))
    model, info = load_classifier(onnx_path)
    paths = artifact_paths(onnx_path, targets, output)
    check_output_files(_written(paths, fp16))  # a folder in the way fails now, before images are decoded
    if images is None:
        if data_dir is None:
            raise UserError("calibration needs images: give a data folder (--data)")
        from .data import load_dataset
        images = load_dataset(data_dir, info.preprocess, labels_file=labels_file, num_images=num_images, seed=seed,
                              workers=workers, cache_dir=cache_dir, progress=progress, num_classes=info.num_classes)
    _check_images(images, info.preprocess.input_size)

    from .qdq import quantize
    from .ranges import compute_ranges
    ranges = compute_ranges(model, images.array, method, percentile, seed=seed, progress=progress)
    # The artifacts are one set (models, cache and ranges from one pass): staged, then renamed together, so an
    # error or an interrupt leaves the previous set whole instead of new models beside an old cache.
    with staged_files(_written(paths, fp16)) as staged:
        quantized = {}
        for target in targets:
            metadata = {
                "precision": "int8",
                "quant_target": target,
                "calibration_method": method,
                "calibration_images": str(ranges.num_images),
                "calibration_seed": str(seed),
            }
            if ranges.percentile is not None:
                metadata["calibration_percentile"] = repr(float(ranges.percentile))
            final = paths["int8"][target]
            quantized[target] = quantize(model, ranges, target, staged[final], metadata).to_dict()
            quantized[target]["path"] = final
        write_calibration_cache(staged[paths["cache"]], ranges.scales(), trt_number, ranges.trt_algorithm)
        report = ranges.to_dict()
        report.update(model=os.path.basename(onnx_path), model_sha256=sha256_file(onnx_path),
                      trt_version=trt_number, targets=list(targets))
        write_json(staged[paths["ranges"]], report)
        if fp16:
            _write_fp16(model, staged[paths["fp16"]])
    fp16_path = paths["fp16"] if fp16 else None
    return CalibrationResult(
        int8_models=dict(paths["int8"]), calib_cache=paths["cache"], ranges_json=paths["ranges"],
        fp16_model=fp16_path, num_images=ranges.num_images, skipped=list(getattr(images, "skipped", [])),
        method=method, trt_version=trt_number, trt_algorithm=ranges.trt_algorithm, percentile=ranges.percentile,
        quantized=quantized, notes=list(getattr(images, "notes", [])),
    )


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


def _check_images(images, size: int) -> None:
    array = images.array
    if array.ndim != 4 or array.shape[1:] != (3, size, size):
        raise UserError("calibration images have shape {}, the model expects (N, 3, {}, {})".format(
            tuple(array.shape), size, size))
    if len(array) == 0:
        raise UserError("no calibration images could be read")


def artifact_paths(onnx_path: str, targets: Sequence[str], output=None) -> Dict[str, object]:
    """Where each artifact goes: ``output`` for the first target's model, siblings named after the model."""
    directory = os.path.dirname(os.path.abspath(os.fspath(output))) if output else os.path.dirname(onnx_path)
    stem = os.path.splitext(os.path.basename(onnx_path))[0]
    sibling = lambda suffix: os.path.join(directory, stem + suffix)  # noqa: E731
    int8 = {target: sibling(".int8.{}.onnx".format(target)) for target in targets}
    if output:
        int8[targets[0]] = os.path.abspath(os.fspath(output))
    paths = {"int8": int8, "cache": sibling(".calib.cache"), "ranges": sibling(".ranges.json"),
             "fp16": sibling(".fp16.onnx")}
    written = list(int8.values()) + [paths["cache"], paths["ranges"], paths["fp16"]]
    if onnx_path in written or len(set(written)) != len(written):
        raise UserError("output {} would overwrite the input model or another artifact; choose another -o".format(
            output))
    return paths


def _written(paths: Dict[str, object], fp16: bool) -> List[str]:
    return list(paths["int8"].values()) + [paths["cache"], paths["ranges"]] + ([paths["fp16"]] if fp16 else [])


def _write_fp16(model, path: str) -> str:
    import onnx
    from deploy.fileio import atomic_path
    from .fp16 import convert_to_fp16
    with atomic_path(path) as tmp:
        onnx.save(convert_to_fp16(model), tmp)
    return path
