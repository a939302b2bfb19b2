"""Model metadata: what export writes into ONNX ``metadata_props`` and what every later stage reads back.

Readers try, in order: the ``onnx`` package, ONNX Runtime's model metadata, and a JSON sidecar beside the
file (``model.onnx.json`` / ``model.engine.json``), so a Jetson with only TensorRT still finds it.
"""
import os
import re
from dataclasses import dataclass
from typing import Dict, Optional

from .errors import UserError
from .preprocess import PreprocessSpec
from .schema import MapOf, load_checked_json
from .validate import (MAX_CLASSES, check_against_graph, check_metadata_dict, check_onnx_file, check_onnx_model,
                       graph_io_shapes, parse_int_field)

PRODUCER = "eca-deploy"

# What a model was exported from (metadata key SOURCE_KEY): a zoo name with a checkpoint (models exported before
# the key existed are zoo models), a program that carries its own code (torch.export or TorchScript, loaded by
# file), or an ONNX classifier from elsewhere, whose FP32 ONNX is then the reference. Only for a zoo model is
# ``arch`` ever looked up as a model name; otherwise it is a label.
SOURCE_KEY = "source_kind"
SOURCE_ZOO = "zoo"
SOURCE_EXPORT = "torch.export"
SOURCE_TORCHSCRIPT = "torchscript"
SOURCE_ONNX = "onnx"
SOURCES = (SOURCE_ZOO, SOURCE_EXPORT, SOURCE_TORCHSCRIPT, SOURCE_ONNX)
PROGRAM_SOURCES = (SOURCE_EXPORT, SOURCE_TORCHSCRIPT)


def reference_origin(source_kind: str) -> str:
    """What the reference logits came from, in every report: PyTorch, or the FP32 ONNX of a model from elsewhere."""
    return "the FP32 ONNX" if source_kind == SOURCE_ONNX else "PyTorch"


# arch is data that reaches file names, reports and device configs: a short name of plain characters.
_ARCH_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


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
            raise UserError("{} carries no eca-deploy metadata (arch, num_classes); export it with `eca-deploy export`".format(
                source))
        if not meta["arch"].strip():
            raise UserError("{}: metadata field arch is empty".format(source))
        if not _ARCH_PATTERN.fullmatch(meta["arch"]):
            raise UserError("{}: metadata field arch {!r} is not a model name (letters, digits and ._+- only, at "
                            "most 64)".format(source, meta["arch"][:40]))
        if meta.get(SOURCE_KEY, SOURCE_ZOO) not in SOURCES:
            raise UserError("{}: metadata field {} must be one of {}, got {!r}".format(
                source, SOURCE_KEY, ", ".join(SOURCES), meta[SOURCE_KEY][:40]))
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

    @property
    def source_kind(self) -> str:
        """zoo, torch.export, torchscript or onnx (checked on load)."""
        return (self.extra or {}).get(SOURCE_KEY, SOURCE_ZOO)

    @property
    def from_program(self) -> bool:
        return self.source_kind in PROGRAM_SOURCES

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


# What readers use of the sidecars (deploy.trt.sidecar writes the engine's, bundling.bundle the model's). Fields are
# optional, as sidecars of older releases lack some, but a field that is there has the type readers rely on.
ENGINE_SIDECAR_SCHEMA = {
    "format?": str, "engine?": str, "engine_size?": int, "tensorrt_version?": str,
    "device?": {"name?": str, "dla_core?": (int, type(None))}, "trt_flags?": [str],
    "strongly_typed?": bool, "version_compatible?": bool, "hardware_compatibility_level?": str, "profiles?": list,
    "build_options?": dict, "metadata?": dict, "source_onnx?": {"path?": str, "sha256?": str},
}
MODEL_SIDECAR_SCHEMA = {"metadata?": dict, "inputs?": MapOf([(int, type(None))]), "precision?": (dict, str),
                        "sha256?": str}


def read_sidecar(model_path) -> Optional[dict]:
    """The sidecar beside ``model_path``, schema-checked, or None when there is none."""
    path = sidecar_path(model_path)
    if not os.path.lexists(path):
        return None
    schema = MODEL_SIDECAR_SCHEMA if os.fspath(model_path).endswith(".onnx") else ENGINE_SIDECAR_SCHEMA
    sidecar = load_checked_json(path, schema, "sidecar")
    if "metadata" in sidecar:
        check_metadata_dict(sidecar["metadata"], path)
    return sidecar


def load_onnx_proto(path):
    """(onnx module, ModelProto without external weights) of an existing file, or (None, None) where the onnx
    package is not installed (Jetsons often lack it). A missing or corrupt file is a UserError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError("no such model file: {}".format(path))
    check_onnx_file(path)  # size and protobuf structure, before onnx or ONNX Runtime reads it whole
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


def _onnx_metadata_and_shapes(path: str, image_input: bool = False):
    """(metadata_props, first input shape, first output shape) by onnx, ONNX Runtime or the sidecar;
    ``image_input``: first refuse a graph whose input is not an N x 3 x H x W float32 image batch."""
    onnx, model = load_onnx_proto(path)
    if model is not None:
        inputs, outputs = graph_io_shapes(model)
        if image_input:
            _check_onnx_input(model, onnx, path)
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
        if image_input:
            feeds = session.get_inputs()
            check_image_input([(node.name, shape(node), node.type[len("tensor("):-1]) for node in feeds], path)
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
        meta, inputs, outputs = _onnx_metadata_and_shapes(path, image_input=True)
        info = ModelInfo.from_metadata(meta, source=path)
        check_against_graph(inputs, outputs, info.preprocess.input_size, info.num_classes, path)
        return info
    sidecar = read_sidecar(path)
    if sidecar is None:
        raise UserError("{} has no sidecar {}; engines built by `eca-deploy build` carry one".format(
            path, sidecar_path(path)))
    return ModelInfo.from_metadata(sidecar.get("metadata", {}), source=sidecar_path(path))


# -- the image input every classifier here has --------------------------------------------------------------

# float32 as both onnx (TensorProto.FLOAT, lowered) and ONNX Runtime ("tensor(float)") name it
_FLOAT32 = "float"


def _check_onnx_input(model, onnx, path: str) -> None:
    initializers = {init.name for init in model.graph.initializer}
    feeds = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        shape = ([dim.dim_value if dim.HasField("dim_value") else None for dim in tensor.shape.dim]
                 if tensor.HasField("shape") else None)
        kind = onnx.TensorProto.DataType.Name(tensor.elem_type).lower() if value.type.HasField("tensor_type") \
            else value.type.WhichOneof("value")
        feeds.append((value.name, shape, kind))
    check_image_input(feeds, path)


def check_image_input(feeds, path: str) -> None:
    """``feeds`` ([(name, shape or None, element type)]) must be one N x 3 x H x W float32 input with H and W
    fixed: what the shared preprocessing makes. Anything else (metadata copied onto another graph) would fail
    deep inside a runtime, so it is one line naming the model and the input here."""
    expected = "expected one N x 3 x H x W float32 image input"
    if len(feeds) != 1:
        raise UserError("{} has {} inputs ({}); {}".format(path, len(feeds), ", ".join(n for n, _, _ in feeds[:4])
                                                          or "none", expected))
    name, shape, kind = feeds[0]
    if kind != _FLOAT32:
        raise UserError("{}: input {} holds {} values; {}".format(path, name, kind, expected))
    if shape is None:
        raise UserError("{}: input {} has no recorded shape; {}".format(path, name, expected))
    if len(shape) != 4 or shape[1] != 3:
        described = " x ".join("?" if dim is None else str(dim) for dim in shape) or "a scalar"
        raise UserError("{}: input {} is {} (rank {}); {}".format(path, name, described, len(shape), expected))
    if any(not isinstance(dim, int) or dim <= 0 for dim in shape[2:]):
        raise UserError("{}: input {} has a dynamic height or width; {} with H and W fixed (export fixes them to "
                        "--input-size)".format(path, name, expected))
