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
        if "num_classes" not in meta or "arch" not in meta:
            raise UserError("{} carries no eca-deploy metadata (arch, num_classes); export it with `cli.py export`".format(
                source))
        known = {"arch", "num_classes", "precision", "checkpoint_sha256"}
        return cls(
            arch=meta["arch"],
            num_classes=int(meta["num_classes"]),
            preprocess=PreprocessSpec.from_metadata(meta),
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
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise UserError("cannot read sidecar {}: {}".format(path, exc)) from None


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
        return onnx, onnx.load(path, load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for a corrupt file
        raise UserError("{} is not a readable ONNX model: {}".format(path, exc)) from None


def read_onnx_metadata(path) -> Dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict, without needing onnx on the device."""
    path = os.fspath(path)
    _, model = load_onnx_proto(path)
    if model is not None:
        return {prop.key: prop.value for prop in model.metadata_props}
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        try:
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise UserError("{} is not a readable ONNX model: {}".format(path, str(exc).splitlines()[0])) from None
        return dict(session.get_modelmeta().custom_metadata_map)
    sidecar = read_sidecar(path)
    if sidecar is None:
        raise UserError("cannot read metadata of {}: install onnx or onnxruntime, or ship {}".format(
            path, sidecar_path(path)))
    return dict(sidecar.get("metadata", sidecar))


def read_model_info(path) -> ModelInfo:
    """ModelInfo of an ONNX model, or of an engine from its sidecar."""
    path = os.fspath(path)
    if path.endswith(".onnx"):
        return ModelInfo.from_metadata(read_onnx_metadata(path), source=path)
    sidecar = read_sidecar(path)
    if sidecar is None:
        raise UserError("{} has no sidecar {}; engines built by `cli.py build` carry one".format(
            path, sidecar_path(path)))
    return ModelInfo.from_metadata(sidecar.get("metadata", {}), source=sidecar_path(path))
