"""Parameter and MAC counts that reproduce the paper's (#Param and GFLOPs, ResNet-18/34 rows).

Units
-----
The paper's units are binary: ``#Param = params / 2**20`` and ``GFLOPs = MACs / 2**30`` at a 1x3x224x224 input, printed
with ``'%.3f'``. The official ECA-Net code (``paras_flops.py``) counts with ``thop.profile`` and prints through
a ``clever_format`` that divides by ``1024 ** 2`` / ``1024 ** 3``; :class:`Complexity` exposes the same two
quotients as ``mparams_binary`` and ``gmacs_binary``.

Counting convention
-------------------
The MACs are what a *2019 thop* (releases 0.0.30 to 0.0.31.post1912, contemporary with the paper) reports.
Current thop (0.1.x) differs in one rule, Linear, which it counts as ``in * out``: that leaves ResNet-34 and
ECA-ResNet-18/34 one step below their printed figures, and the 2019 rule puts them back (and keeps the
ResNet-18 and SE rows). This counter agrees with thop 0.0.31.post1910 on every zoo model up to thop's own
float32 accumulation (a few hundred MACs in billions).
Like thop, the counter hooks ``nn.Module`` forwards, so

* every *call* of a counted module is counted (a module applied twice, such as CBAM's shared MLP on the
  average- and the max-pooled vector, counts twice);
* operations written as tensor functions or operators are not counted: the attention scaling ``x * a``, the
  residual add, reshapes, ``torch.cat``, channel-wise ``amax``/``mean`` and MobileNetV2's head ``mean``.

Per module (``out`` is the number of output elements, ``in`` the number of input elements):

==========================================  ====================================================
Conv1d/2d/3d                                ``out * (C_in / groups * prod(kernel) + bias)``
BatchNorm1d/2d/3d                           ``4 * in``
Linear                                      ``out * (in_features + in_features - 1 + bias)``
AdaptiveAvgPool1d/2d/3d                     ``out * (prod(in_size // out_size) + 1)``
AvgPool1d/2d/3d                             ``out * (prod(kernel) + 1)``
ReLU, ReLU6, Sigmoid, max pools, Dropout,   0
Flatten, Identity and any other module
without parameters
==========================================  ====================================================

A leaf module *with* parameters but without a rule raises ``ValueError`` rather than silently counting 0.

With this convention all eight ResNet-18/34 rows of the paper print exactly. What is counted depends on how the forward pass is
written, as it did for the paper's authors: functional calls are invisible. The zoo follows the official code
in this: ECA and SE pool with ``nn.AdaptiveAvgPool2d`` modules (counted), while the official CBAM
(Jongchan/attention-module) pools its channel gate with functional calls and builds the spatial gate's input
with ``torch.cat`` of ``torch.max``/``torch.mean`` (not counted), and so does the zoo's CBAM.
"""
from dataclasses import dataclass
from typing import Dict, Union

import torch
from torch import nn

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCH_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_ADAPTIVE_AVG_POOL = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_AVG_POOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


def _prod(values) -> int:
    result = 1
    for value in values:
        result *= int(value)
    return result


def _pool_dims(module: nn.Module, family) -> int:
    """1, 2 or 3: the spatial rank of a pool from a (1d, 2d, 3d) family of classes."""
    return next(rank for rank, cls in enumerate(family, 1) if isinstance(module, cls))


def _conv_macs(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    # One multiply-accumulate per weight tap and output element, plus one add per output for the bias
    # (thop's count_convNd, unchanged in current thop). Covers the ECA Conv1d and CBAM's 7x7 spatial conv.
    kernel = _prod(module.weight.shape[2:])
    bias = 1 if module.bias is not None else 0
    return y.numel() * (module.in_channels // module.groups * kernel + bias)


def _batch_norm_macs(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    # Subtract the mean, divide by the std, scale by gamma, shift by beta: 4 ops per element, as thop counts
    # an affine BatchNorm (2019 and current releases alike), even in eval mode where the four fold into one
    # affine map that a deployed graph merges into the conv. the paper's counts include them, so they are counted.
    return 4 * x.numel()


def _linear_macs(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    # in_features multiplies and in_features - 1 adds per output, plus the bias add: thop's count_linear in
    # its 2019 releases (0.0.30 has no bias term, 0.0.31.post1910 adds it; no published figure depends on it).
    # Current thop counts in*out; the 2*in rule adds ~0.5M MACs through the 1000-way classifier, which is
    # what lifts ResNet-34 to 3.427 and ECA-ResNet-18/34 to 1.700/3.428 while the other rows keep theirs.
    bias = 1 if module.bias is not None else 0
    return y.numel() * (2 * module.in_features - 1 + bias)


def _adaptive_avg_pool_macs(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    # A window of prod(in // out) adds and one divide per output (thop's count_adap_avgpool). For the global
    # pools here that is (H*W + 1) per channel: the squeeze of SE, ECA and CBAM and the ResNet head.
    dims = _pool_dims(module, _ADAPTIVE_AVG_POOL)
    window = _prod(i // o for i, o in zip(x.shape[-dims:], y.shape[-dims:]))
    return y.numel() * (window + 1)


def _avg_pool_macs(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    # prod(kernel) adds and one divide per output (thop's count_avgpool; thop took an int kernel_size as a
    # 1-D window, this takes it as the square/cube it is). No zoo model has one.
    dims = _pool_dims(module, _AVG_POOL)
    kernel = module.kernel_size
    window = _prod(kernel) if isinstance(kernel, (tuple, list)) else int(kernel) ** dims
    return y.numel() * (window + 1)


def _rule(module: nn.Module):
    if isinstance(module, _CONV):
        return _conv_macs
    if isinstance(module, _BATCH_NORM):
        return _batch_norm_macs
    if isinstance(module, nn.Linear):
        return _linear_macs
    if isinstance(module, _ADAPTIVE_AVG_POOL):
        return _adaptive_avg_pool_macs
    if isinstance(module, _AVG_POOL):
        return _avg_pool_macs
    return None


def count_params(model: nn.Module) -> int:
    """All parameters (shared ones once), as thop and ``sum(p.numel())`` count them; buffers are not."""
    return sum(p.numel() for p in model.parameters())


def macs_by_module(model: nn.Module, input_size: int = 224) -> Dict[str, int]:
    """MACs of each counted module (by qualified name) for one 1x3xSxS forward, in eval mode, without grad.

    Modules the convention counts as 0 (activations, max pools, ...) are left out. The model's training
    mode is restored afterwards.
    """
    counts: Dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue  # containers: their leaves are counted
        rule = _rule(module)
        if rule is None:
            if next(module.parameters(recurse=False), None) is not None:
                raise ValueError("no MAC rule for {} ({}), which has parameters".format(
                    name, type(module).__name__))
            continue  # parameter-free leaves (ReLU, Sigmoid, MaxPool, Dropout, Flatten, ...) cost 0

        def hook(mod, inputs, output, name=name, rule=rule):
            counts[name] = counts.get(name, 0) + int(rule(mod, inputs[0], output))

        handles.append(module.register_forward_hook(hook))

    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return counts


def count_macs(model: nn.Module, input_size: int = 224) -> int:
    """Multiply-accumulates of one 1x3xSxS forward under the module docstring's convention."""
    return sum(macs_by_module(model, input_size).values())


@dataclass
class Complexity:
    name: str
    params: int
    macs: int

    @property
    def mparams_binary(self) -> float:
        """Parameters / 2**20, the paper's #Param (M)."""
        return self.params / 2 ** 20

    @property
    def gmacs_binary(self) -> float:
        """MACs / 2**30, the paper's GFLOPs."""
        return self.macs / 2 ** 30


def complexity(name_or_model: Union[str, nn.Module], input_size: int = 224) -> Complexity:
    """Params and MACs of a zoo model (by name, built with its defaults) or of a given module."""
    if isinstance(name_or_model, str):
        from .registry import create_model  # the registry imports deploy; keep this module light to import

        name, model = name_or_model, create_model(name_or_model)
    else:
        model = name_or_model
        name = getattr(model, "arch", None) or type(model).__name__
    return Complexity(name, count_params(model), count_macs(model, input_size))
