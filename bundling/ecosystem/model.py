"""What the consumers' configs are written from: one bundled model as the device will see it.

Each fact comes from the source the device itself uses, so a config cannot drift from what runs: tensor names,
shapes and types from the ONNX graph, preprocessing and classes from its metadata, and the engine's file name and
batch range from the very ``deploy.build`` line of ``build_engines.sh`` (parsed with deploy.build's own parser,
then named and profiled by the same functions the build uses).
"""
import os
import shlex
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from deploy.errors import UserError

BUILD_PREFIX = ("python3", "-m", "deploy.build")


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str            # the ONNX element type's name: FLOAT, FLOAT16, ...
    shape: Tuple          # None for a dynamic axis


@dataclass(frozen=True)
class BundledModel:
    file: str             # the ONNX file's name in the bundle
    engine: str           # the engine file build_engines.sh writes for it
    max_batch: int        # the engine profile's largest batch (or the model's static batch)
    dynamic_batch: bool
    input: Tensor
    output: Tensor
    precision: str        # fp32, fp16 or int8 (Q/DQ)
    preprocess: object    # deploy.preprocess.PreprocessSpec
    labels: Tuple[str, ...]
    data_files: Tuple[str, ...]  # external-data files, relative to the model's folder

    @property
    def stem(self) -> str:
        return self.file[:-len(".onnx")] if self.file.endswith(".onnx") else self.file

    @property
    def normalize_in_graph(self) -> bool:
        # getattr: models exported before the field existed normalize outside the graph
        return bool(getattr(self.preprocess, "normalize_in_graph", False))

    @property
    def image_shape(self) -> Tuple[int, int, int]:
        channels, height, width = self.input.shape[1:]
        return int(channels), int(height), int(width)


def describe_model(staging: str, command: str, label_files: Sequence[str] = ()) -> BundledModel:
    """The model that ``command`` (a ``python3 -m deploy.build MODEL ...`` line of build_engines.sh) builds."""
    from deploy.build import make_parser
    from deploy.metadata import read_model_info
    from deploy.onnx_info import inspect_onnx
    from deploy.trt.plan import default_engine_path

    words = shlex.split(command)
    if tuple(words[:3]) != BUILD_PREFIX:
        raise UserError("not a deploy.build line: {}".format(command))
    args = make_parser().parse_args(words[3:])
    path = os.path.join(staging, args.model)
    info = read_model_info(path)
    precision = inspect_onnx(path).precision.label
    inputs, outputs, data_files = _graph_io(path)
    if len(inputs) != 1 or len(outputs) != 1:
        raise UserError("{}: the consumers' configs are written for one image input and one logits output, this "
                        "model has {} inputs and {} outputs".format(args.model, len(inputs), len(outputs)))
    max_batch, dynamic = _batch_range(inputs[0], args)
    return BundledModel(args.model, os.path.basename(args.output or default_engine_path(args.model, precision)),
                        max_batch, dynamic, inputs[0], outputs[0], precision, info.preprocess,
                        tuple(class_names(staging, info.num_classes, label_files)), tuple(data_files))


def _graph_io(path: str) -> Tuple[List[Tensor], List[Tensor], List[str]]:
    from deploy.metadata import load_onnx_proto
    from deploy.validate import external_data_files

    onnx, model = load_onnx_proto(path)
    if model is None:
        raise UserError("writing the DeepStream and Triton configs needs the onnx package to read {}".format(path))
    initializers = {init.name for init in model.graph.initializer}

    def tensor(value) -> Tensor:
        kind = value.type.tensor_type
        shape = tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in kind.shape.dim)
        return Tensor(value.name, onnx.TensorProto.DataType.Name(kind.elem_type), shape)

    inputs = [tensor(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [tensor(v) for v in model.graph.output], external_data_files(model, path)


def _batch_range(image: Tensor, args) -> Tuple[int, bool]:
    """(largest batch, dynamic?) as deploy.build will profile the engine with these options."""
    from deploy.trt.profiles import resolve_profiles

    if len(image.shape) != 4:
        raise UserError("input {!r} is not an NCHW image batch: shape {}".format(image.name, list(image.shape)))
    profiles = resolve_profiles({image.name: image.shape}, args.min_batch, args.opt_batch, args.max_batch)
    if profiles:
        return int(profiles[0].max[0]), True
    return int(image.shape[0]), False


def class_names(staging: str, num_classes: int, label_files: Sequence[str] = ()) -> List[str]:
    """The model's class names: the first bundled labels file with one name per class, else ImageNet's for a
    1000-class model (as deploy.infer names them), else the class indices."""
    from deploy.infer import load_labels

    for label_file in label_files:
        try:
            names = load_labels(num_classes, os.path.join(staging, os.path.basename(label_file)))
        except UserError:  # a labels file for another model of the bundle
            continue
        if names:
            return names
    return load_labels(num_classes) or [str(index) for index in range(num_classes)]
