"""The export stage: checkpoint -> zoo model -> ONNX file with metadata, verified against PyTorch."""
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import onnx
import torch

import models
from deploy.errors import CheckFailedError, UserError
from deploy.fileio import atomic_path
from deploy.metadata import ModelInfo
from deploy.preprocess import PreprocessSpec, resolve_spec
from deploy.validate import MAX_INPUT_SIZE, check_batch_memory, check_bound, check_opset, max_opset
from models.info import num_classes_of, preprocess_for

from .attention_forms import DEFAULT_FORM, METADATA_KEY, FormReport, check_form, convert
from .gates import drop_gate_expands, find_eca_gates
from .input_normalization import add_input_normalization
from .onnx_graph import full_check, op_histogram, set_metadata, simplify, trace_to_onnx
from .parity import ParityReport, check_parity

DEFAULT_OPSET = 17
MIN_OPSET = 13  # per-channel QuantizeLinear (axis) and the Q/DQ that TensorRT parses need 13+


@dataclass
class ExportResult:
    path: str
    arch: str
    metadata: Dict[str, str]
    parity: ParityReport
    random_weights: bool
    simplified: bool
    notes: List[str] = field(default_factory=list)
    ops: Dict[str, int] = field(default_factory=dict)
    attention_form: Optional[FormReport] = None
    preprocess: Optional[PreprocessSpec] = None

    def to_dict(self) -> Dict[str, object]:
        return {
            "path": self.path,
            "arch": self.arch,
            "random_weights": self.random_weights,
            "simplified": self.simplified,
            "notes": self.notes,
            "metadata": self.metadata,
            "ops": self.ops,
            "attention_form": self.attention_form.to_dict() if self.attention_form else None,
            "preprocessing": dict(self.preprocess.to_dict(), summary=self.preprocess.describe())
            if self.preprocess else None,
            "parity": self.parity.to_dict(),
        }


def max_export_opset() -> int:
    """The newest opset both torch's TorchScript exporter and the installed onnx support; checked up front, since
    torch fails deep inside the trace on a newer one (and prints the whole graph)."""
    from torch.onnx import _constants  # private, but the only place torch states its range; guarded below
    newest = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", None) or getattr(
        _constants, "ONNX_MAX_OPSET", DEFAULT_OPSET)
    return min(int(newest), max_opset())


def model_metadata(model, spec: PreprocessSpec, checkpoint, opset: int, seed: int) -> Dict[str, str]:
    info = ModelInfo(
        arch=model.arch,
        num_classes=int(num_classes_of(model)),
        preprocess=spec,
        precision="fp32",
        checkpoint_sha256=checkpoint.sha256 if checkpoint else "",
        extra={
            "weights": "checkpoint" if checkpoint else "random (seed {})".format(seed),
            "opset": str(opset),
            "torch_version": torch.__version__.split("+")[0],
        },
    )
    return info.to_metadata()


def check_export_options(attention_form: str, opset: int, input_size: int, batch: Optional[int]) -> None:
    check_form(attention_form)
    check_opset(opset, MIN_OPSET, max_export_opset())
    if input_size < 32:
        raise UserError("input size {} is too small; the networks downsample by 32".format(input_size))
    if batch is not None and batch < 1:
        raise UserError("batch must be positive, got {}".format(batch))
    check_bound("--input-size", input_size, MAX_INPUT_SIZE)


def export_model(
    arch: str,
    output,
    weights=None,
    num_classes: Optional[int] = None,
    input_size: int = 224,
    opset: int = DEFAULT_OPSET,
    batch: Optional[int] = None,
    do_simplify: bool = True,
    parity_batch_sizes: Sequence[int] = (1, 4),
    seed: int = 0,
    attention_form: str = DEFAULT_FORM,
    preprocess_options: Optional[Dict[str, object]] = None,
    **model_options,
) -> ExportResult:
    """Export ``arch`` to ``output``. Raises UserError on bad input, and CheckFailedError when ONNX Runtime
    disagrees with PyTorch; the output path is then left as it was.

    ``attention_form``: how the attention gates are spelled (exporter.attention_forms): ``nchwc`` runs faster in
    ONNX Runtime FP32 on x86, ``lean`` is the plain graph for TensorRT and the Q/DQ models.
    ``preprocess_options``: resize / mean / std / interpolation overrides (deploy.preprocess.PREPROCESS_OPTIONS)
    of the model's own preprocessing; they go into the metadata that every later stage reads.
    ``normalize_in_graph=True`` among them puts the normalization into the graph (exporter.input_normalization).
    """
    check_export_options(attention_form, opset, input_size, batch)
    batch_sizes = [batch] if batch else list(parity_batch_sizes)
    check_batch_memory(max(batch_sizes), input_size, "--input-size")  # the parity batches, before the model
    model, checkpoint = models.load_model(arch, weights, num_classes=num_classes, seed=seed, **model_options)
    spec = resolve_spec(preprocess_for(model, input_size), **(preprocess_options or {}))
    input_size = spec.input_size  # a timm config may set it

    graph = trace_to_onnx(model, input_size, opset, batch)
    metadata = model_metadata(model, spec, checkpoint, opset, seed)
    return finish_export(graph, model, spec, metadata, output, batch_sizes, do_simplify, attention_form, arch,
                         checkpoint is None)


def finish_export(graph, reference, spec: PreprocessSpec, metadata: Dict[str, str], output, batch_sizes, do_simplify,
                  attention_form: str, arch: str, random_weights: bool, notes=None, foreign: bool = False
                  ) -> ExportResult:
    """Check, simplify, spell the attention gates, stamp the metadata and write ``graph`` to ``output`` only when
    ONNX Runtime agrees with ``reference`` (a callable: the PyTorch model, the program, or the original ONNX).
    ``foreign``: a graph whose modules the zoo does not name; its ECA gates are found by their computation."""
    full_check(graph)
    notes = list(notes or [])
    simplified = False
    if do_simplify:
        graph, problem = simplify(graph)
        simplified = problem is None
        if problem:
            notes.append(problem)
    gates = None
    if foreign:
        gates = len(find_eca_gates(graph))
        drop_gate_expands(graph)  # the gate's Mul broadcasts (N, C, 1, 1) itself: the lean form
        notes.append("{} ECA gates found (global pool -> 1-D conv -> sigmoid -> multiply)".format(gates) if gates else
                     "no ECA gates found (global pool -> 1-D conv -> sigmoid -> multiply): the graph is exported as "
                     "it is, and the attention analysis has nothing to record")
    # After onnxsim, which would otherwise be free to fold the inserted convs of ones back into a broadcast.
    form = convert(graph, attention_form)
    if gates is not None:
        form.eca_gates = gates
        if attention_form == "nchwc" and gates and not form.channel_gates:
            notes.append("nchwc: shape inference cannot show any ECA gate to be (N, C, 1, 1) in this graph, so the "
                         "gates stay lean")
    if spec.normalize_in_graph:  # after onnxsim too: nothing may fold it into the zero-padded first conv
        add_input_normalization(graph, spec)
    metadata = dict(metadata)
    metadata[METADATA_KEY] = attention_form
    set_metadata(graph, metadata)
    full_check(graph)

    output = os.path.abspath(os.fspath(output))
    with atomic_path(output) as tmp:
        onnx.save(graph, tmp)
        parity = check_parity(reference, tmp, spec, batch_sizes)
        if not parity:  # raised inside, so the model that disagrees is never left at the output path
            raise CheckFailedError("ONNX Runtime output differs from PyTorch beyond tolerance (max abs error {:.3g}); "
                                   "{} was not written".format(parity.max_abs_error, output))
    return ExportResult(output, arch, metadata, parity, random_weights, simplified, notes, op_histogram(graph),
                        form, spec)
