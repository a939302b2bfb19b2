"""Model metadata: what export writes into ONNX ``metadata_props`` and what every later stage reads back.

Readers try, in order: the ``onnx`` package, ONNX Runtime's model metadata, and a JSON sidecar beside the
file (``model.onnx.json`` / ``model.engine.json``), so a Jetson with only TensorRT still finds it.
"""
import json
import os
from dataclasses import dataclass
from typing import Dict, Optional

from .errors import UserError
from .preprocess import PreprocessSpec
from .validate import (MAX_CLASSES, check_against_graph, check_metadata_dict, check_onnx_model, graph_io_shapes,
                       parse_int_field)

PRODUCER = "eca-deploy"


@dataclass(frozen=True)
class ModelInfo:
    """What a deployed classifier is: its preprocessing, classes, precision and provenance."""

    arch: str
    num_classes: int
    preprocess: PreprocessSpec
    precision: str = "fp32"
    checkpoint_sha256: str = ""
    extra: Optional[Dict[str, str]] = None

    @classmethod
    def from_metadata(cls, meta: Dict[str, str], source="model") -> "ModelInfo":
        """Validated on load: a field that is missing or malformed is a UserError naming ``source`` and it."""
        meta = check_metadata_dict(meta, source)
        if "num_classes" not in meta or "arch" not in meta:
            raise UserError("{} carries no eca-deploy metadata (arch, num_classes); export it with `cli.py export`".format(
                source))
        if not meta["arch"].strip():
            raise UserError("{}: metadata field arch is empty".format(source))
        known = {"arch", "num_classes", "precision", "checkpoint_sha256"}
        try:
            preprocess = PreprocessSpec.from_metadata(meta)
        except UserError as exc:
            raise UserError("{}: {}".format(source, exc)) from None
        return cls(
            arch=meta["arch"],
            num_classes=parse_int_field("metadata field num_classes", meta["num_classes"], minimum=1,
                                        maximum=MAX_CLASSES, source=source),
            preprocess=preprocess,
            precision=meta.get("precision", "fp32"),
            checkpoint_sha256=meta.get("checkpoint_sha256", ""),
            extra={k: v for k, v in meta.items() if k not in known},
        )

    def to_metadata(self) -> Dict[str, str]:
        meta = dict(self.extra or {})
        meta.update(self.preprocess.to_metadata())
        meta.update({
            "arch": self.arch,
            "num_classes": str(self.num_classes),
            "precision": self.precision,
            "checkpoint_sha256": self.checkpoint_sha256,
            "producer": PRODUCER,
        })
        return meta


def sidecar_path(model_path) -> str:
    return os.fspath(model_path) + ".json"


def read_sidecar(model_path) -> Optional[dict]:
    path = sidecar_path(model_path)
    if not os.path.exists(path):
        return None
    try:
        with open(path, "r", encoding="utf-8") as handle:
            sidecar = json.load(handle)
    except (OSError, ValueError) as exc:
        raise UserError("cannot read sidecar {}: {}".format(path, exc)) from None
    if not isinstance(sidecar, dict):
        raise UserError("sidecar {} must hold a JSON object, not a {}".format(path, type(sidecar).__name__))
    if "metadata" in sidecar:
        check_metadata_dict(sidecar["metadata"], path)
    return sidecar


def load_onnx_proto(path):
    """(onnx module, ModelProto without external weights) of an existing file, or (None, None) where the onnx
    package is not installed (Jetsons often lack it). A missing or corrupt file is a UserError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError("no such model file: {}".format(path))
    try:
        import onnx  # optional on Jetson
    except ImportError:
        return None, None
    try:
        model = onnx.load(path, load_external_data=False)
    except OSError as exc:
        raise UserError("cannot read {}: {}".format(path, exc.strerror or exc)) from None
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for a corrupt file
        raise UserError("{} is not a readable ONNX model: {}".format(path, str(exc).splitlines()[0][:200]
                                                                      if str(exc) else type(exc).__name__)) from None
    check_onnx_model(model, path)  # opset in range, external data inside the model's folder
    return onnx, model


def read_onnx_metadata(path) -> Dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict, without needing onnx on the device."""
    path = os.fspath(path)
    return _onnx_metadata_and_shapes(path)[0]


def _onnx_metadata_and_shapes(path: str):
    """(metadata_props, first input shape, first output shape) by onnx, ONNX Runtime or the sidecar."""
    _, model = load_onnx_proto(path)
    if model is not None:
        inputs, outputs = graph_io_shapes(model)
        return {prop.key: prop.value for prop in model.metadata_props}, inputs, outputs
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        try:
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise UserError("{} is not a readable ONNX model: {}".format(path, str(exc).splitlines()[0])) from None
        shape = lambda node: [d if isinstance(d, int) else None for d in node.shape]  # noqa: E731
        return (dict(session.get_modelmeta().custom_metadata_map), shape(session.get_inputs()[0]),
                shape(session.get_outputs()[0]))
    sidecar = read_sidecar(path)
    if sidecar is None:
        raise UserError("cannot read metadata of {}: install onnx or onnxruntime, or ship {}".format(
            path, sidecar_path(path)))
    return check_metadata_dict(sidecar.get("metadata", sidecar), sidecar_path(path)), None, None


def read_model_info(path) -> ModelInfo:
    """ModelInfo of an ONNX model, or of an engine from its sidecar."""
    path = os.fspath(path)
    if path.endswith(".onnx"):
        meta, inputs, outputs = _onnx_metadata_and_shapes(path)
        info = ModelInfo.from_metadata(meta, source=path)
        check_against_graph(inputs, outputs, info.preprocess.input_size, info.num_classes, path)
        return info
    sidecar = read_sidecar(path)
    if sidecar is None:
        raise UserError("{} has no sidecar {}; engines built by `cli.py build` carry one".format(
            path, sidecar_path(path)))
    return ModelInfo.from_metadata(sidecar.get("metadata", {}), source=sidecar_path(path))
