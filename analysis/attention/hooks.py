"""Recording the channel weights of every ECA, SE and CBAM channel-gate block with forward hooks.

The hook sits on each block's ``sigmoid`` module, so what is recorded is exactly the vector that scales the
block's channels: ECALayer.sigmoid gives (N, 1, C), SELayer.sigmoid (``fc[3]``) and ChannelGate.sigmoid give
(N, C). Every vector is stored as (N, C) float32.
"""
import re
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import nn

from deploy.errors import UserError
from models.layers import ECALayer, SELayer
from models.layers.cbam import ChannelGate

_KINDS = ((ECALayer, "eca"), (SELayer, "se"), (ChannelGate, "cbam"))
_RESNET_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.")
_MOBILENET_BLOCK = re.compile(r"^(features\.\d+)\.")


@dataclass(frozen=True)
class AttentionBlock:
    """One attention block: its module path, kind, the seed's label and the path of its sigmoid module."""

    name: str          # "layer1.0.eca"
    kind: str          # "eca", "se" or "cbam"
    label: str         # "conv_2_1": the seed's j-th block of stage i (ResNet stages conv_2..conv_5)
    channels: int
    sigmoid_path: str  # "layer1.0.eca.sigmoid", "layer1.0.se.fc.3", "layer1.0.cbam.ChannelGate.sigmoid"

    def to_dict(self) -> Dict[str, object]:
        return {"name": self.name, "kind": self.kind, "label": self.label, "channels": self.channels}


def block_label(name: str) -> str:
    """``layer1.0.eca`` -> ``conv_2_1`` (layer1..layer4 are the seed's conv_2..conv_5); MobileNetV2's
    ``features.3.conv.4`` -> ``features.3``; else the path of the block that holds the module."""
    match = _RESNET_BLOCK.match(name)
    if match:
        return "conv_{}_{}".format(int(match.group(1)) + 1, int(match.group(2)) + 1)
    match = _MOBILENET_BLOCK.match(name)
    if match:
        return match.group(1)
    return name.rsplit(".", 1)[0] if "." in name else name


def find_attention_blocks(model: nn.Module) -> List[AttentionBlock]:
    """The model's ECA, SE and CBAM channel-gate blocks in execution (module) order."""
    paths = {id(module): path for path, module in model.named_modules()}
    blocks = []
    for path, module in model.named_modules():
        kind = next((k for cls, k in _KINDS if isinstance(module, cls)), None)
        if kind is None:
            continue
        blocks.append(AttentionBlock(path, kind, block_label(path), int(module.channels), paths[id(module.sigmoid)]))
    return blocks


def require_blocks(model: nn.Module, arch: str) -> List[AttentionBlock]:
    blocks = find_attention_blocks(model)
    if not blocks:
        raise UserError("{} has no ECA, SE or CBAM channel-attention blocks to record".format(arch))
    return blocks


class AttentionRecorder:
    """Context manager: while active, every forward pass stores each block's weights in ``weights``.

    ``pop()`` returns the weights of the passes since the last pop as {block name: (N, C) float32}.
    """

    def __init__(self, model: nn.Module, blocks: List[AttentionBlock] = None):
        self.model = model
        self.blocks = blocks if blocks is not None else find_attention_blocks(model)
        self._captured: Dict[str, List[np.ndarray]] = {block.name: [] for block in self.blocks}
        self._handles = []

    def __enter__(self) -> "AttentionRecorder":
        modules = dict(self.model.named_modules())
        for block in self.blocks:
            self._handles.append(modules[block.sigmoid_path].register_forward_hook(self._hook(block)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, block: AttentionBlock):
        def store(module, inputs, output):
            weights = output.detach().to(torch.float32).reshape(output.shape[0], -1)
            self._captured[block.name].append(weights.cpu().numpy())
        return store

    def pop(self) -> Dict[str, np.ndarray]:
        result = {}
        for name, chunks in self._captured.items():
            result[name] = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
            self._captured[name] = []
        return result


def record_attention(model: nn.Module, inputs: np.ndarray,
                     blocks: List[AttentionBlock] = None) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """Run ``inputs`` (N, 3, S, S) through ``model``; return (logits, {block name: (N, C) weights})."""
    with AttentionRecorder(model, blocks) as recorder, torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)))
        return logits.numpy(), recorder.pop()
