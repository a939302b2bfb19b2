"""A PyTorch model that travels without its code: a ``torch.export`` program (``.pt2``) or a TorchScript module.

timm's ECA ResNets (``ecaresnet50d``, ...) cannot be rebuilt from the zoo here: their stems, downsampling and
module names differ, and timm does not import beside this project's CPU torch. A user saves the program in their
own environment (``torch.export.save`` or ``torch.jit.save``) and it loads here with no model code at all. Those two
loaders are the only ones used for programs: a pickled whole model (``torch.save(model)``) would run arbitrary code
on load, so it stays refused (models.checkpoint loads plain tensors only).

The kind is told from the zip archive's own entries, never from the file name: torch.export writes
``archive_format`` and ``models/model.json``; TorchScript writes ``constants.pkl`` and ``code/``; a ``torch.save``
file has only ``data.pkl``.
"""
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from deploy.errors import UserError
from deploy.fileio import sha256_file
from deploy.metadata import SOURCE_EXPORT, SOURCE_TORCHSCRIPT

PROGRAM_KINDS = (SOURCE_EXPORT, SOURCE_TORCHSCRIPT)


def archive_kind(path) -> Optional[str]:
    """``torch.export``, ``torchscript``, ``torch.save`` (a pickle: a checkpoint or a whole model) or None (not a
    zip archive: an ONNX model, a legacy torch.save file, anything else)."""
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name.split("/", 1)[-1] for name in archive.namelist()]
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    if "archive_format" in names or "models/model.json" in names:
        return SOURCE_EXPORT
    if "constants.pkl" in names and any(name.startswith("code/") for name in names):
        return SOURCE_TORCHSCRIPT
    if "data.pkl" in names:
        return "torch.save"
    return None


def is_program(path) -> bool:
    return os.path.isfile(os.fspath(path)) and archive_kind(path) in PROGRAM_KINDS


class ProgramModule(nn.Module):
    """The loaded program as an eval-mode module the runners, the exporter and the parity check can call.

    An unlifted torch.export module refuses ``train()``/``eval()`` (it is always in the mode it was exported in),
    so mode changes stop here; a program is inference-only by construction.
    """

    def __init__(self, module, kind: str):
        super().__init__()
        self.program = module
        self.kind = kind

    def train(self, mode: bool = True):
        return self

    def forward(self, inputs):
        output = self.program(inputs)
        if isinstance(output, (tuple, list)):  # a program that returns (logits,): the classifier's one output
            output = output[0]
        return output


@dataclass
class Program:
    path: str
    kind: str          # torch.export or torchscript
    sha256: str        # of the file: what later stages check the reference against
    module: ProgramModule
    exported: object = None    # the torch.export.ExportedProgram (the ONNX exporter takes it as it is)
    input_size: Optional[int] = None  # what the .pt2 was exported at (H = W), when it says

    @property
    def name(self) -> str:
        return program_name(self.path)


# A program's name comes from its file name; it is data (written into metadata, reports, configs), never looked up.
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_NAME = 64


def program_name(path) -> str:
    """The file name without its suffixes, reduced to [A-Za-z0-9._+-] (``ecaresnet50d.pt2`` -> ``ecaresnet50d``)."""
    base = os.path.basename(os.fspath(path))
    stripped = True
    while stripped:  # ecaresnet50d.torchscript.pt -> ecaresnet50d
        stripped = False
        for suffix in (".pt2", ".torchscript", ".pt", ".pth", ".jit", ".onnx"):
            if base.lower().endswith(suffix) and len(base) > len(suffix):
                base, stripped = base[:-len(suffix)], True
    name = _NAME_CHARS.sub("_", base).strip("._-")[:MAX_NAME]
    return name or "program"


def load_program(path) -> Program:
    """Load a ``.pt2`` or TorchScript file; anything else is one line saying what it is and what is accepted."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError("program not found: {}".format(path))
    kind = archive_kind(path)
    if kind not in PROGRAM_KINDS:
        what = {"torch.save": "a torch.save pickle, not a program (a pickled whole model is refused: loading it "
                              "would run arbitrary code)"}.get(kind, "neither a torch.export (.pt2) nor a TorchScript "
                                                                     "file")
        raise UserError("{} is {}; save the model with torch.export.save or torch.jit.save".format(path, what))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == SOURCE_EXPORT:
                exported = torch.export.load(path)
                program = Program(path, kind, sha256_file(path), ProgramModule(exported.module(), kind), exported,
                                  _exported_input_size(exported))
            else:
                module = torch.jit.load(path, map_location="cpu").eval()
                program = Program(path, kind, sha256_file(path), ProgramModule(module, kind))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001  (both loaders raise RuntimeError, ValueError, KeyError ... on damage)
        raise UserError("cannot load the {} program {}: {}".format(kind, path, _first_line(exc))) from None
    return program


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _exported_input_size(exported) -> Optional[int]:
    """H of the program's one image input when it was exported square and static in H and W, else None."""
    users = list(exported.graph_signature.user_inputs)
    placeholders = [node for node in exported.graph.nodes if node.op == "placeholder" and node.name in users]
    if len(placeholders) != 1:
        raise UserError("the program takes {} inputs; a classifier here takes one image batch".format(
            len(placeholders)))
    value = placeholders[0].meta.get("val")
    shape = getattr(value, "shape", None)
    if shape is None or len(shape) != 4:
        return None
    height, width = shape[2], shape[3]
    if isinstance(height, int) and isinstance(width, int) and height == width:
        return int(height)
    return None


def has_dynamic_batch(program: Program) -> bool:
    """Whether a .pt2 was exported with a symbolic batch dimension (TorchScript modules take any batch)."""
    if program.exported is None:
        return True
    users = list(program.exported.graph_signature.user_inputs)
    for node in program.exported.graph.nodes:
        if node.op == "placeholder" and node.name in users:
            shape = getattr(node.meta.get("val"), "shape", None)
            return shape is not None and not isinstance(shape[0], int)
    return False


def output_classes(program: Program, input_size: int) -> int:
    """The classifier's width, read by running the program once on a zero batch of two."""
    with torch.no_grad():
        try:
            logits = program.module(torch.zeros(2 if has_dynamic_batch(program) else static_batch(program), 3,
                                                input_size, input_size))
        except Exception as exc:  # noqa: BLE001
            raise UserError("{} does not run on a {}x{} image batch: {}".format(
                program.path, input_size, input_size, _first_line(exc))) from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise UserError("{} returns {} for an image batch; a classifier returns (N, classes) logits".format(
            program.path, tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__))
    return int(logits.shape[1])


def static_batch(program: Program) -> int:
    """The batch size a .pt2 without a dynamic batch dimension was exported with."""
    users = list(program.exported.graph_signature.user_inputs)
    node = next(n for n in program.exported.graph.nodes if n.op == "placeholder" and n.name in users)
    return int(node.meta["val"].shape[0])


def load_checked_program(path, sha256: str, source: str) -> Program:
    """The program an artifact was exported from: its sha256 must be the one in ``source``'s metadata, so what
    the proof compares with is the same program the model came from."""
    program = load_program(path)
    if sha256 and program.sha256 != sha256:
        raise UserError("{} (sha256 {}) is not the program {} was exported from (sha256 {}); give that file".format(
            path, program.sha256[:12], source, sha256[:12]))
    return program
