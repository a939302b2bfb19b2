"""Models from outside the zoo: a program that carries its own code (torch.export ``.pt2`` or TorchScript), and an
ONNX classifier exported elsewhere. Both end as the zoo's models do (exporter.api.finish_export): checked,
simplified, the attention gates spelled as asked, the preprocessing and provenance stamped, and written only when
ONNX Runtime agrees with the original.

The ONNX written is IR 8 at opset 17 or lower, what ONNX Runtime on JetPack and TensorRT 8.5's parser read. The
dynamo exporter (the only one that takes a torch.export program) writes opset 18 and IR 10, so its graph is
simplified and converted down with onnx's version converter.
"""
import logging
import os
import warnings
from typing import Dict, Optional, Sequence

import onnx
import torch

from deploy.errors import UserError
from deploy.fileio import sha256_file
from deploy.metadata import SOURCE_KEY, SOURCE_ONNX, ModelInfo, check_image_input
from deploy.preprocess import PreprocessSpec, resolve_spec
from deploy.validate import check_batch_memory, graph_io_shapes
from models.program import Program, has_dynamic_batch, load_program, output_classes, program_name, static_batch

from .api import DEFAULT_OPSET, ExportResult, check_export_options, finish_export
from .onnx_graph import INPUT_NAME, OUTPUT_NAME, simplify, trace_to_onnx

# The ONNX IR version every exported model carries: ONNX Runtime on the device and TensorRT 8.5/8.6 read no newer.
EXPORT_IR_VERSION = 8
DYNAMO_OPSET = 18  # the oldest opset torch's dynamo exporter writes
# A MODEL argument with one of these suffixes (or a path separator) names a file, never a zoo model.
MODEL_FILE_SUFFIXES = (".pt2", ".pt", ".pth", ".jit", ".ts", ".torchscript", ".onnx")


def source_kind(model: str) -> str:
    """``zoo``, ``program`` or ``onnx`` for export's MODEL argument: an existing file is a program or an ONNX
    model by its content (a .pt2 or TorchScript archive, else an ONNX protobuf); anything else is a zoo name."""
    from models.program import archive_kind
    if not os.path.isfile(model):
        if os.sep in model or os.path.splitext(model)[1].lower() in MODEL_FILE_SUFFIXES:
            raise UserError("no such model file: {}".format(model))
        return "zoo"
    kind = archive_kind(model)
    if kind in ("torch.export", "torchscript"):
        return "program"
    if kind == "torch.save":
        raise UserError("{} is a torch.save file: give a zoo name with --weights {} for a checkpoint (a pickled "
                        "whole model is refused: loading it would run arbitrary code; save it with torch.export.save "
                        "or torch.jit.save)".format(model, model))
    if model.lower().endswith(".onnx"):
        return "onnx"
    raise UserError("{} is neither a torch.export (.pt2), TorchScript nor ONNX file".format(model))


def _metadata(arch: str, kind: str, sha256: str, spec: PreprocessSpec, num_classes: int, opset: int,
              weights: str) -> Dict[str, str]:
    info = ModelInfo(arch=arch, num_classes=num_classes, preprocess=spec, precision="fp32", checkpoint_sha256=sha256,
                     extra={SOURCE_KEY: kind, "weights": weights, "opset": str(opset),
                            "torch_version": torch.__version__.split("+")[0]})
    return info.to_metadata()


def _program_input_size(program: Program, input_size: Optional[int], preprocess_options: Dict) -> PreprocessSpec:
    """The spec of a program: its own recorded size, a timm config, or --input-size; they must agree with a .pt2
    whose H and W are static (it cannot run another size)."""
    size = input_size or program.input_size
    if size is None and not preprocess_options.get("timm_config"):
        raise UserError("{} records no input size (TorchScript does not): give --input-size or --timm-config".format(
            program.path))
    spec = resolve_spec(PreprocessSpec.for_input_size(int(size or 224)),
                        **dict(preprocess_options, crop=preprocess_options.get("crop") or input_size))
    if program.input_size is not None and spec.input_size != program.input_size:
        raise UserError("{} was exported for {}x{} images, but the preprocessing asks for {}x{}; export the program "
                        "at that size or drop --input-size".format(program.path, program.input_size,
                                                                   program.input_size, spec.input_size,
                                                                   spec.input_size))
    return spec


def export_program(path, output, input_size: Optional[int] = None, opset: int = DEFAULT_OPSET,
                   batch: Optional[int] = None, do_simplify: bool = True, parity_batch_sizes: Sequence[int] = (1, 4),
                   attention_form: str = "lean", preprocess_options: Optional[Dict[str, object]] = None
                   ) -> ExportResult:
    """A .pt2 or TorchScript program to ONNX, held to the program's own outputs."""
    program = load_program(path)
    spec = _program_input_size(program, input_size, dict(preprocess_options or {}))
    check_export_options(attention_form, opset, spec.input_size, batch)
    notes = []
    if batch is None and not has_dynamic_batch(program):
        batch = static_batch(program)
        notes.append("{} was exported with a fixed batch of {}; so is the ONNX model (save it with a dynamic batch "
                     "dimension for any batch)".format(program.path, batch))
    batch_sizes = [batch] if batch else list(parity_batch_sizes)
    check_batch_memory(max(batch_sizes), spec.input_size, "--input-size")
    num_classes = output_classes(program, spec.input_size)
    if program.exported is not None:
        graph = _dynamo_to_onnx(program, spec.input_size, opset, batch)
    else:
        graph = trace_to_onnx(program.module.program, spec.input_size, opset, batch)
    metadata = _metadata(program.name, program.kind, program.sha256, spec, num_classes, opset, "program")
    return finish_export(graph, program.module, spec, metadata, output, batch_sizes, do_simplify, attention_form,
                         program.name, False, notes, foreign=True)


def _dynamo_to_onnx(program: Program, input_size: int, opset: int, batch: Optional[int]) -> onnx.ModelProto:
    """torch.onnx.export of an ExportedProgram (the dynamo exporter; needs onnxscript), then down to ``opset`` and
    IR 8. Its dynamic batch dimension is renamed ``batch``, as the zoo's exports name it."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter imports it; say so in one line, not a traceback)
    except ImportError:
        raise UserError("exporting a torch.export program needs onnxscript (pip install -r requirements.txt)") from None
    example = torch.zeros(batch or 1, 3, input_size, input_size)
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in quiet]
    try:
        for logger in quiet:  # the exporter's notes (opset bumps, torchvision ops skipped) are not the user's concern
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            exported = torch.onnx.export(program.exported, (example,), dynamo=True, opset_version=DYNAMO_OPSET,
                                         input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], optimize=True,
                                         verbose=False, report=False)
        graph = exported.model_proto
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001  (torch raises its own export errors with whole graphs inside)
        raise UserError("torch cannot export the program {}: {}".format(
            program.path, str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__)) from None
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    return down_convert(graph, opset, program.path)


def down_convert(graph: onnx.ModelProto, opset: int, source: str) -> onnx.ModelProto:
    """``graph`` at ``opset`` (when it is newer) and IR 8, with its batch dimension named ``batch``."""
    current = next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current > opset:
        simplified, problem = simplify(graph)  # folds the shape arithmetic the converter cannot take as inputs
        try:
            graph = onnx.version_converter.convert_version(simplified, opset)
        except Exception as exc:  # noqa: BLE001  (the converter asserts in C++)
            raise UserError("{}: the ONNX graph cannot be converted from opset {} to {} ({}){}".format(
                source, current, opset, str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else "",
                "; " + problem if problem else "")) from None
        _drop_newer_reduce_attributes(graph, opset)
    graph.ir_version = min(graph.ir_version, EXPORT_IR_VERSION)
    for value in list(graph.graph.input) + list(graph.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_param"):
            dims[0].dim_param = "batch"
    return graph


def _drop_newer_reduce_attributes(graph: onnx.ModelProto, opset: int) -> None:
    """onnx's 18 -> 17 adapter moves ReduceMean's axes back to an attribute but keeps ``noop_with_empty_axes``,
    which opset 17 does not have. Its default (0) is opset 17's behaviour, so only that value may be dropped."""
    if opset >= 18:
        return
    for node in graph.graph.node:
        if not node.op_type.startswith("Reduce"):
            continue
        for attribute in list(node.attribute):
            if attribute.name == "noop_with_empty_axes":
                if onnx.helper.get_attribute_value(attribute) != 0:
                    raise UserError("node {} reduces nothing when given no axes (noop_with_empty_axes=1), which "
                                    "opset {} cannot say; export with --opset 18".format(node.name, opset))
                node.attribute.remove(attribute)


# -- an ONNX classifier from elsewhere ------------------------------------------------------------------------

class OnnxReference:
    """The user's original ONNX model as the reference callable of the parity check (torch tensors in and out)."""

    def __init__(self, path: str):
        import onnxruntime as ort
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, inputs):
        return torch.from_numpy(self.session.run(None, {self.input_name: inputs.numpy()})[0])


def export_onnx_file(path, output, input_size: Optional[int] = None, opset: int = DEFAULT_OPSET,
                     do_simplify: bool = True, parity_batch_sizes: Sequence[int] = (1, 4),
                     attention_form: str = "lean", preprocess_options: Optional[Dict[str, object]] = None
                     ) -> ExportResult:
    """An ONNX classifier exported elsewhere: checked (one N x 3 x S x S float32 input, (N, classes) output),
    simplified, stamped with its preprocessing, and held to the original file in ONNX Runtime. No PyTorch program
    exists, so its FP32 ONNX is the reference of every later stage, which says so."""
    path = os.fspath(path)
    try:
        original = onnx.load(path)
    except Exception as exc:  # noqa: BLE001  (DecodeError, ValueError ... on a damaged file)
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError("{} is not a readable ONNX model: {}".format(path, reason)) from None
    from deploy.validate import check_onnx_model
    check_onnx_model(original, path, min_opset=1)
    meta = {prop.key: prop.value for prop in original.metadata_props}
    if meta.get("producer") == "eca-deploy":
        raise UserError("{} was written by eca-deploy export already; use it as it is".format(path))
    inputs = [value for value in original.graph.input if value.name not in {i.name for i in original.graph.initializer}]
    shape_in, shape_out = graph_io_shapes(original)
    kind = onnx.TensorProto.DataType.Name(inputs[0].type.tensor_type.elem_type).lower() if inputs else "none"
    check_image_input([(v.name, shape_in if i == 0 else None, kind) for i, v in enumerate(inputs)], path)
    if len(original.graph.output) != 1 or shape_out is None or len(shape_out) != 2:
        raise UserError("{} has {} outputs of shape {}; expected one (N, classes) logits output".format(
            path, len(original.graph.output), shape_out))
    size = int(shape_in[2])
    if shape_in[2] != shape_in[3]:
        raise UserError("{} takes {}x{} images; this tool center-crops squares".format(path, shape_in[2], shape_in[3]))
    options = dict(preprocess_options or {})
    spec = resolve_spec(PreprocessSpec.for_input_size(size), **dict(options, crop=options.get("crop") or input_size))
    if spec.input_size != size:
        raise UserError("{} takes {}x{} images, but the preprocessing asks for {}x{}".format(
            path, size, size, spec.input_size, spec.input_size))
    if spec.normalize_in_graph:
        raise UserError("--normalize-in-graph is for models this tool exports from PyTorch; {} keeps its own input"
                        .format(path))
    batch = shape_in[0] if isinstance(shape_in[0], int) else None
    num_classes = shape_out[1]
    if not isinstance(num_classes, int):
        raise UserError("{}: the output's class dimension is not fixed".format(path))
    check_export_options(attention_form, opset, size, batch)
    graph = _renamed_io(original, inputs[0].name, original.graph.output[0].name)
    graph = down_convert(graph, opset, path)
    metadata = _metadata(program_name(path), SOURCE_ONNX, sha256_file(path), spec, num_classes, _opset(graph),
                         "onnx")
    notes = ["no PyTorch program: the original ONNX {} is the reference of the parity check, and this FP32 model the "
             "reference of every later stage".format(path)]
    batch_sizes = [batch] if batch else list(parity_batch_sizes)
    return finish_export(graph, OnnxReference(path), spec, metadata, output, batch_sizes, do_simplify,
                         attention_form, program_name(path), False, notes, foreign=True)


def _opset(graph: onnx.ModelProto) -> int:
    return next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), 0)


def _renamed_io(model: onnx.ModelProto, input_name: str, output_name: str) -> onnx.ModelProto:
    """A copy whose image input and logits output carry the names every stage here feeds and reads."""
    graph = onnx.ModelProto()
    graph.CopyFrom(model)
    renames = {input_name: INPUT_NAME, output_name: OUTPUT_NAME}
    for node in graph.graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    for value in list(graph.graph.input) + list(graph.graph.output) + list(graph.graph.value_info):
        value.name = renames.get(value.name, value.name)
    return graph
