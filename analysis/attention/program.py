"""The attention analysis of a program (.pt2) this repository has no code for: its ECA gates are found in the
program's graph by their computation (a global pool, a 1-D conv across channels, a sigmoid, a multiply of the
feature map), and each gate's sigmoid output is recorded while the graph runs.

Only a torch.export program has a graph to read here. A TorchScript module runs as compiled code whose
intermediate values cannot be recorded without its source, so it is refused in one line.
"""
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn

from deploy.errors import UserError
from models.program import Program

from .hooks import AttentionBlock, block_label

_VIEW_OPS = {"view", "reshape", "_unsafe_view", "squeeze", "unsqueeze", "transpose", "permute", "expand",
             "expand_as", "clone", "contiguous", "flatten", "alias"}
_POOL_OPS = {"mean", "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "avg_pool2d"}
_CONV_OPS = {"conv1d", "convolution", "_convolution", "conv2d"}
GATE_PATTERN = "global pool -> 1-D conv -> sigmoid -> multiply"


def _op(node) -> Optional[str]:
    if node is None or node.op != "call_function":
        return None
    return getattr(node.target, "_opname", None) or getattr(node.target, "__name__", None)


def _up(node):
    """The first producer above ``node`` that is not a view op."""
    while _op(node) in _VIEW_OPS:
        node = node.args[0]
    return node


def _gate_mul(sigmoid, feature) -> bool:
    """Whether the sigmoid's value reaches, through view ops, a multiply with ``feature``."""
    frontier = list(sigmoid.users)
    while frontier:
        user = frontier.pop()
        if _op(user) in _VIEW_OPS:
            frontier.extend(user.users)
        elif _op(user) == "mul" and feature in user.args:
            return True
    return False


def _block_name(node, index: int) -> str:
    """The module that owns the gate (``layer1.se``), from the program's module stack; else ``gate<i>``."""
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    paths = [path for path, kind in stack if path and not str(kind).endswith("Sigmoid")]
    return paths[-1] if paths else "gate{}".format(index)


def find_program_gates(program: Program) -> List[AttentionBlock]:
    """The program's ECA gates in graph order, or a UserError saying in one line why there are none."""
    if program.exported is None:
        raise UserError("{} is a TorchScript module: its gates cannot be recorded without its code; save the model "
                        "with torch.export.save (.pt2) for the attention analysis".format(program.path))
    graph = program.module.program.graph
    blocks = []
    for node in graph.nodes:
        if _op(node) != "sigmoid":
            continue
        conv = _up(node.args[0])
        if _op(conv) not in _CONV_OPS:
            continue
        pool = _up(conv.args[0])
        if _op(pool) not in _POOL_OPS:
            continue
        feature = pool.args[0]
        value = feature.meta.get("val") if hasattr(feature, "meta") else None
        if value is None or value.dim() != 4 or not _gate_mul(node, feature):
            continue
        name = _block_name(node, len(blocks))
        blocks.append(AttentionBlock(name, "eca", block_label(name), int(value.shape[1]), node.name))
    if not blocks:
        raise UserError("{} has no ECA gates this tool can find ({})".format(program.path, GATE_PATTERN))
    return blocks


class GateRecordingProgram(nn.Module):
    """The program, run node by node so the gates' sigmoid outputs can be kept (``captured``)."""

    def __init__(self, program: Program, blocks: List[AttentionBlock]):
        super().__init__()
        self.program = program
        self.module = program.module.program
        self.wanted = {block.sigmoid_path: block.name for block in blocks}
        self.captured: Dict[str, List[np.ndarray]] = {block.name: [] for block in blocks}
        self.recording = False

    def train(self, mode: bool = True):
        return self

    def forward(self, inputs):
        wanted, captured, recording = self.wanted, self.captured, self.recording

        class Recorder(torch.fx.Interpreter):
            def run_node(self, node):
                result = super().run_node(node)
                if recording and node.name in wanted:
                    captured[wanted[node.name]].append(
                        result.detach().to(torch.float32).reshape(result.shape[0], -1).cpu().numpy())
                return result

        # the unlifted module's own forward flattens and checks its inputs; the interpreter takes them flat
        return Recorder(self.module).run(inputs)


class ProgramRecorder:
    """AttentionRecorder's interface (enter, exit, pop) over a GateRecordingProgram."""

    def __init__(self, model: GateRecordingProgram):
        self.model = model

    def __enter__(self):
        self.model.recording = True
        return self

    def __exit__(self, *exc):
        self.model.recording = False

    def pop(self) -> Dict[str, np.ndarray]:
        result = {}
        for name, chunks in self.model.captured.items():
            result[name] = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
            self.model.captured[name] = []
        return result
