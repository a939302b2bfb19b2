"""jetson-inference's ``imagenet``: the command line for each model it can run, and why not for the others.

What imagenet does with an ONNX model (dusty-nv/jetson-inference, c/tensorNet.cpp and imageNet.cpp): it resizes
the whole image to the network size, normalizes with ImageNet's mean and std (hard-coded), and builds its own
TensorRT engine from the file, in FP16 on a Jetson, with no optimization profile. So it runs a model that
normalizes outside its graph with ImageNet's numbers, in float, with a fixed batch. The bundled models have a
dynamic batch (for deploy.build's profile), so imagenet gets a batch-1 copy of one model per network (the
smallest file of its precisions: imagenet builds FP16 from either) under ``jetson-inference/``. The copy is not
shipped: it would store the model twice, for a difference of two numbers in its header. build_engines.sh derives
it on the device with ``python3 -m deploy.fixed_batch`` (standard library only). A model with external data keeps
a self-contained copy written here, since the derived one would have to sit beside the model's data.
"""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from deploy.fileio import atomic_path
from deploy.names import write_label_file
from deploy.preprocess import IMAGENET_MEAN, IMAGENET_STD

from ..formats import shell_command

FOLDER = "jetson-inference"
LABELS_FILE = "labels.txt"
INPUT_EXAMPLE = "csi://0 display://0"


@dataclass(frozen=True)
class ImagenetLine:
    model: str                       # the bundled model this is about
    command: Optional[str] = None    # the imagenet line, when imagenet can run it
    reason: str = ""                 # otherwise why not, in one sentence
    derive: Optional[str] = None     # the build_engines.sh line that writes the batch-1 copy it loads


def why_not(model) -> str:
    """Why imagenet cannot run ``model`` (ecosystem.model.BundledModel), or '' when it can."""
    spec = model.preprocess
    if model.normalize_in_graph:
        return ("{} normalizes inside its graph and takes pixels 0-255, but imagenet normalizes every ONNX input "
                "with ImageNet's mean and std itself, so the input would be normalized twice".format(model.file))
    if not (np.allclose(spec.mean, IMAGENET_MEAN, atol=1e-6) and np.allclose(spec.std, IMAGENET_STD, atol=1e-6)):
        return ("imagenet normalizes ONNX inputs with ImageNet's mean and std, hard-coded, and {} expects mean {} "
                "and std {}".format(model.file, list(spec.mean), list(spec.std)))
    if model.precision == "int8":
        return ("{} is a Q/DQ INT8 model, and imagenet builds its own engine in FP16 (INT8 only through its own "
                "calibrator), not with the INT8 flag a Q/DQ model needs; run it with deploy.infer, DeepStream or "
                "Triton".format(model.file))
    if model.input.dtype != "FLOAT" or model.output.dtype != "FLOAT":
        return "imagenet feeds and reads float32 tensors, and {} has {} input and {} output".format(
            model.file, model.input.dtype, model.output.dtype)
    return ""


def write_imagenet_models(staging: str, models) -> List[ImagenetLine]:
    """One imagenet line per network imagenet can run, with the model it runs written under jetson-inference/;
    a line with the reason for every other model."""
    chosen = _one_per_network(staging, models)
    lines = []
    for model in models:
        reason = why_not(model)
        if reason:
            lines.append(ImagenetLine(model.file, reason=reason))
        elif model.file in chosen.values():
            command, derive = _write_runnable(staging, model)
            lines.append(ImagenetLine(model.file, command=command, derive=derive))
        else:
            twin = chosen[_network(model)]
            lines.append(ImagenetLine(model.file, reason="imagenet builds its own FP16 engine from {} or {} alike; "
                                      "the line for {} serves both".format(model.file, twin, twin)))
    return lines


def _network(model) -> Tuple:
    """Models that differ only in precision are one network to imagenet."""
    spec = model.preprocess
    return (model.input.shape[1:], model.output.shape[1:], spec.input_size, tuple(model.labels),
            model.stem.split(".")[0])


def _one_per_network(staging: str, models) -> Dict[Tuple, str]:
    chosen: Dict[Tuple, str] = {}
    for model in sorted((m for m in models if not why_not(m)), key=lambda m: _size(staging, m)):
        chosen.setdefault(_network(model), model.file)
    return chosen


def _size(staging: str, model) -> int:
    return sum(os.path.getsize(os.path.join(staging, name)) for name in (model.file,) + tuple(model.data_files))


def _write_runnable(staging: str, model) -> Tuple[str, Optional[str]]:
    """The imagenet line and, when the batch is dynamic, the device-side line that derives its batch-1 copy
    (a model with external data gets its self-contained copy written here instead); writes the labels file."""
    folder = os.path.join(staging, FOLDER)
    os.makedirs(folder, exist_ok=True)
    name, derive = model.file, None
    if model.dynamic_batch or model.input.shape[0] != 1:
        name = FOLDER + "/" + model.stem + ".batch1.onnx"
        if model.data_files:
            write_batch1_copy(os.path.join(staging, model.file), os.path.join(staging, name))
        else:
            derive = shell_command(["python3", "-m", "deploy.fixed_batch", model.file, name])
    labels = "{}/{}_{}".format(FOLDER, model.stem, LABELS_FILE)
    write_label_file(os.path.join(staging, labels), model.labels, model.file)
    # shell words, as in build_engines.sh: a model named "my model.onnx" stays one argument
    return shell_command(["imagenet", "--model=" + name, "--labels=" + labels, "--input_blob=" + model.input.name,
                          "--output_blob=" + model.output.name]) + " " + INPUT_EXAMPLE, derive


def write_batch1_copy(source: str, target: str) -> None:
    """``source`` with its batch axis fixed to 1: imagenet builds without an optimization profile, which TensorRT
    refuses for a dynamic input ("Network has dynamic or shape inputs, but no optimization profile")."""
    import onnx

    model = onnx.load(source)  # with its external data: the copy is one self-contained file
    initializers = {init.name for init in model.graph.initializer}
    for value in [v for v in model.graph.input if v.name not in initializers] + list(model.graph.output):
        batch = value.type.tensor_type.shape.dim[0]
        batch.Clear()
        batch.dim_value = 1
    del model.graph.value_info[:]  # inferred shapes that still name the dynamic batch
    onnx.checker.check_model(model)
    with atomic_path(target) as tmp:
        onnx.save(model, tmp)
