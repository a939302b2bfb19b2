"""A Triton Inference Server model repository, ``triton/``: every bundled model twice.

- ``<model>_onnx``: platform ``onnxruntime_onnx``, its ``1/model.onnx`` (and external data) in the bundle;
- ``<model>_trt``: platform ``tensorrt_plan``, its ``1/model.plan`` put in place by build_engines.sh, which builds
  the engine on the device (a plan only runs on the TensorRT version and GPU that built it).

The model files are hard links to the bundle's own models where the file system allows, so the folder costs no
extra disk and the tarball stores each model once (tar records the second name as a link); elsewhere they are
copies. External-data files are always copied: onnx refuses to load external data that has several hard links.
Copying ``triton/`` alone to a server copies real files.

config.pbtxt is written here as text rather than through protobuf: deploy/ runs on the device with numpy and
Pillow only, the format is twenty lines, and the tests parse every config with Triton's own schema
(tritonclient's ``model_config_pb2``), which rejects a misspelled field. Its strings (a model's tensor names) go
through ``bundling.formats.pbtxt_string``, protobuf's own escaping.
"""
import os
import re
import shutil
from dataclasses import dataclass
from typing import Dict, List

from deploy.errors import UserError
from deploy.fileio import write_text
from deploy.names import write_label_file

from ..formats import pbtxt_comment, pbtxt_string, shell_word

FOLDER = "triton"
LABELS_FILE = "labels.txt"
VERSION = "1"
# ONNX element type -> Triton data type (model_config.proto's DataType)
DATA_TYPES = {"FLOAT": "TYPE_FP32", "FLOAT16": "TYPE_FP16", "DOUBLE": "TYPE_FP64", "BFLOAT16": "TYPE_BF16",
              "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64",
              "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32", "UINT64": "TYPE_UINT64",
              "BOOL": "TYPE_BOOL", "STRING": "TYPE_STRING"}
PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "trt": ("tensorrt_plan", "model.plan")}


@dataclass(frozen=True)
class TritonModel:
    name: str            # the model's name in the repository (its folder)
    platform: str
    source: str          # the bundle file it serves: the ONNX model or the engine
    path: str            # its config.pbtxt, relative to the bundle
    max_batch_size: int


def model_name(model, kind: str) -> str:
    """``<stem>_onnx`` / ``<stem>_trt``, with what is not a letter, digit, '_' or '-' made '_' (a Triton name is a
    folder name and a URL path segment)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", model.stem) + "_" + kind


def write_repository(staging: str, models) -> List[TritonModel]:
    """triton/<name>/config.pbtxt and labels.txt per model and kind, and the ONNX model files."""
    written: List[TritonModel] = []
    seen: Dict[str, str] = {}  # Triton name -> the model file it came from
    for model in models:
        for kind in PLATFORMS:
            name = model_name(model, kind)
            if name in seen:
                raise UserError("{} and {} would both be Triton model {}; rename one".format(seen[name], model.file,
                                                                                              name))
            seen[name] = model.file
            folder = os.path.join(staging, FOLDER, name)
            os.makedirs(folder, exist_ok=True)
            write_label_file(os.path.join(folder, LABELS_FILE), model.labels, model.file)
            write_text(os.path.join(folder, "config.pbtxt"), config_text(model, kind, name))
            if kind == "onnx":
                _place_onnx(staging, model, folder)
            written.append(TritonModel(name, PLATFORMS[kind][0], model.file if kind == "onnx" else model.engine,
                                       "{}/{}/config.pbtxt".format(FOLDER, name), triton_max_batch(model)))
    return written


def triton_max_batch(model) -> int:
    """The engine profile's largest batch; 0 (no batching by Triton) for a model whose batch is fixed."""
    return model.max_batch if model.dynamic_batch else 0


def _place_onnx(staging: str, model, folder: str) -> None:
    version = os.path.join(folder, VERSION)
    os.makedirs(version, exist_ok=True)
    _link_or_copy(os.path.join(staging, model.file), os.path.join(version, PLATFORMS["onnx"][1]))
    for relative in model.data_files:  # ONNX Runtime reads external data beside model.onnx
        target = os.path.join(version, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        # copied, never linked: onnx refuses external data with several hard links ("potential hardlink attack"),
        # so a link would break loading the bundle's own model
        shutil.copy2(os.path.join(staging, relative), target)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)


def build_script_lines(models) -> List[str]:
    """build_engines.sh's last block: each engine into its tensorrt_plan model, linked (no second copy on the
    device's disk) where the file system allows, else copied."""
    lines = ["# Triton: each engine becomes its tensorrt_plan model's {}/{}".format(VERSION, PLATFORMS["trt"][1])]
    for model in models:
        version = "{}/{}/{}".format(FOLDER, model_name(model, "trt"), VERSION)
        plan = shell_word(version + "/" + PLATFORMS["trt"][1])
        engine = shell_word(model.engine)
        # rm first: a rerun then replaces the plan, whatever this ln makes of a target that is already the link
        lines += ["mkdir -p " + shell_word(version), "rm -f " + plan,
                  "ln {0} {1} 2>/dev/null || cp {0} {1}".format(engine, plan)]
    return lines


def config_text(model, kind: str, name: str) -> str:
    platform = PLATFORMS[kind][0]
    batched = bool(triton_max_batch(model))
    source = model.file if kind == "onnx" else "{} (built by build_engines.sh from {})".format(model.engine,
                                                                                               model.file)
    lines = [
        pbtxt_comment("Triton model {}: {}, written by eca-deploy bundle.".format(name, source)),
        pbtxt_comment("max_batch_size is the engine profile's largest batch{}; dims leave the batch out when it is "
                      "above 0.".format("" if batched else " (0: the model's batch is fixed, so dims include it)")),
        'name: {}'.format(pbtxt_string(name)),
        'platform: {}'.format(pbtxt_string(platform)),
        "max_batch_size: {}".format(triton_max_batch(model)),
        "input [",
    ] + _tensor(model.input, batched) + ["]", "output ["] + _tensor(model.output, batched, LABELS_FILE) + ["]"]
    if batched:
        lines.append("dynamic_batching { }")
    lines += ["instance_group [", "  {", "    count: 1", "    kind: KIND_GPU", "  }", "]"]
    return "\n".join(lines) + "\n"


def _tensor(tensor, batched: bool, labels: str = "") -> List[str]:
    if tensor.dtype not in DATA_TYPES:
        raise UserError("tensor {!r} has type {}, which Triton has no data type for".format(tensor.name, tensor.dtype))
    dims = tensor.shape[1:] if batched else tensor.shape
    lines = ["  {", "    name: {}".format(pbtxt_string(tensor.name)), "    data_type: {}".format(DATA_TYPES[tensor.dtype]),
             "    dims: [ {} ]".format(", ".join("-1" if dim is None else str(int(dim)) for dim in dims))]
    if labels:
        lines.append("    label_filename: {}".format(pbtxt_string(labels)))
    return lines + ["  }"]

