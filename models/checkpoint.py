"""Loading checkpoints safely: raw state dicts or official training dicts, with shapes read from the tensors.

``torch.load(..., weights_only=True)`` refuses any pickle that would build arbitrary objects, so a
malicious checkpoint is rejected before any of its code can run.
"""
import os
import pickle
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from deploy.errors import UserError
from deploy.fileio import sha256_file

from .layers import ECALayer
from .registry import create_model, get_entry

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_CLASSIFIER_KEYS = ("fc.weight", "classifier.1.weight")
_LIST_LIMIT = 6


@dataclass
class Checkpoint:
    state_dict: Dict[str, torch.Tensor]
    sha256: str
    arch: Optional[str] = None


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint file into a flat state dict without executing any pickled code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError("checkpoint not found: {}".format(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are not the user's concern
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's safe unpickler refused it: never suggest the unsafe one
        refused = _refused_global(exc)
        raise UserError("refusing to load {}: it is not a plain tensor checkpoint{}".format(
            path, " ({})".format(refused) if refused else "")) from None
    except OSError as exc:
        raise UserError("cannot read checkpoint {}: {}".format(path, exc.strerror or exc)) from None
    except Exception as exc:  # noqa: BLE001  (a text file or random bytes raise KeyError, IndexError, ...)
        detail = " ({})".format(_safe_reason(exc)) if isinstance(exc, RuntimeError) else ""
        raise UserError("{} is not a PyTorch checkpoint (a torch.save file of tensors){}".format(path, detail)) from None
    state_dict, arch = _unwrap(obj, path)
    check_finite_tensors(state_dict, path)
    return Checkpoint(state_dict, sha256_file(path), arch)


def _safe_reason(exc: BaseException) -> str:
    """The first line of torch's message, unless it is the advice to rerun with weights_only=False: that would
    execute whatever the file holds, so it is never passed on."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    kept = [line for line in lines if "weights_only" not in line and "two options" not in line]
    return (kept[0] if kept else "unsupported content")[:160]


def _refused_global(exc: BaseException) -> Optional[str]:
    """The global torch's safe unpickler refused to import (the code a malicious file wanted to run), if named."""
    for line in str(exc).splitlines():
        if "GLOBAL" in line and "weights_only" not in line:
            return line.strip()[:160]
    return None


def check_finite_tensors(state_dict: Dict[str, torch.Tensor], path) -> None:
    """NaN or infinite weights export fine but compute garbage; refuse them at load, naming the first."""
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
            raise UserError("{}: tensor {} holds NaN or infinite values; the checkpoint is damaged".format(path, key))


def _unwrap(obj, path) -> Tuple[Dict[str, torch.Tensor], Optional[str]]:
    if not isinstance(obj, dict):
        raise UserError("{} holds a {}, not a state dict".format(path, type(obj).__name__))
    arch = obj.get("arch") if isinstance(obj.get("arch"), str) else None
    for key in _WRAPPER_KEYS:
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    bad_keys = [k for k in obj if not isinstance(k, str)]
    if bad_keys:
        raise UserError("{} is not a state dict: its keys must be parameter names, found {!r}".format(
            path, bad_keys[0]))
    tensors = {_strip_prefix(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise UserError("{} contains no tensors; expected a state dict or a dict with 'state_dict'".format(path))
    return tensors, arch


def _strip_prefix(key: str) -> str:
    # DataParallel / DistributedDataParallel training saves every key under "module."
    return key[len("module."):] if key.startswith("module.") else key


def infer_num_classes(state_dict: Dict[str, torch.Tensor]) -> Optional[int]:
    for key in _CLASSIFIER_KEYS:
        if key in state_dict and state_dict[key].dim() == 2:
            return int(state_dict[key].shape[0])
    return None


def adapt_eca_kernels(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> Dict[str, int]:
    """Set each ECA layer's k from its ``conv.weight`` of shape (1, 1, k); assume neither rule."""
    kernels = {}
    for name, module in model.named_modules():
        if not isinstance(module, ECALayer):
            continue
        weight = state_dict.get(name + ".conv.weight")
        if weight is not None and weight.dim() == 3 and weight.shape[-1] % 2 == 0:
            raise UserError("{}.conv.weight has kernel size {}; ECA kernels are odd (padding (k-1)/2 keeps the "
                            "channel count)".format(name, int(weight.shape[-1])))
        if weight is not None and weight.dim() == 3 and weight.shape[-1] != module.k_size:
            module.set_kernel_size(int(weight.shape[-1]))
        kernels[name] = module.k_size
    return kernels


def count_extra_eca_convs(state_dict: Dict[str, torch.Tensor]) -> int:
    indices = {int(key.split(".extra_convs.")[1].split(".")[0]) for key in state_dict if ".extra_convs." in key}
    return max(indices) + 1 if indices else 0


def describe_mismatch(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> Optional[str]:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(
        "{} {} vs {}".format(k, tuple(state_dict[k].shape), tuple(expected[k].shape))
        for k in set(expected) & set(state_dict) if state_dict[k].shape != expected[k].shape
    )
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches (checkpoint vs model)", shapes)):
        if items:
            parts.append("{} {}: {}".format(len(items), label, _abbreviate(items)))
    return "; ".join(parts) or None


def _abbreviate(items: List[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (", ... ({} more)".format(len(items) - _LIST_LIMIT) if len(items) > _LIST_LIMIT else "")


# MobileNetV2 widths in use (torchvision, timm, the paper's 1.0); the first conv's width narrows the search.
MOBILENET_WIDTHS = (0.25, 0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


def infer_width_mult(arch: str, state_dict, num_classes: int) -> Optional[float]:
    """The MobileNetV2 width whose tensor shapes the checkpoint has (None: keep the default and let the mismatch
    report say what differs). The stem has round(32 * width) channels, rounded to 8, which alone is ambiguous."""
    stem = state_dict.get("features.0.0.weight")
    if stem is None:
        return None
    guess = float(stem.shape[0]) / 32.0
    for width in sorted(MOBILENET_WIDTHS, key=lambda w: abs(w - guess)):
        candidate = create_model(arch, num_classes=num_classes, width_mult=width)
        shapes = {k: tuple(v.shape) for k, v in candidate.state_dict().items()}
        # ECA's (1, 1, k) kernels are read from the checkpoint later (adapt_eca_kernels): only the rest must fit
        if all(tuple(state_dict[k].shape) == shape for k, shape in shapes.items()
               if k in state_dict and len(shape) != 3):
            return width
    return None


def load_model(arch: str, weights=None, num_classes: Optional[int] = None, seed: int = 0, **options):
    """Build ``arch`` and load ``weights`` into it; without weights, seed the random init.

    Returns (model, checkpoint-or-None). The number of classes and every ECA kernel size come from the
    checkpoint's tensor shapes unless given.
    """
    get_entry(arch)
    if weights is None:
        torch.manual_seed(seed)
        return create_model(arch, num_classes=num_classes or 1000, **options), None
    checkpoint = load_checkpoint(weights)
    state_dict = checkpoint.state_dict
    inferred = infer_num_classes(state_dict)
    if num_classes is not None and inferred is not None and inferred != num_classes:
        raise UserError("{} has {} classes, but --num-classes is {}".format(weights, inferred, num_classes))
    if get_entry(arch).family == "resnet" and "stem_width" not in options and "conv1.weight" in state_dict:
        options["stem_width"] = int(state_dict["conv1.weight"].shape[0])  # narrow variants load as they are
    if get_entry(arch).family == "mobilenet_v2" and "width_mult" not in options:
        width = infer_width_mult(arch, state_dict, num_classes or inferred or 1000)
        if width is not None:
            options["width_mult"] = width
    extra = count_extra_eca_convs(state_dict)
    if extra and "num_convs" not in options:
        options["num_convs"] = extra + 1
    model = create_model(arch, num_classes=num_classes or inferred or 1000, **options)
    try:
        adapt_eca_kernels(model, state_dict)
    except UserError as exc:
        raise UserError("{}: {}".format(weights, exc)) from None
    problem = describe_mismatch(model, state_dict)
    if problem:
        hint = " (checkpoint says arch {})".format(checkpoint.arch) if checkpoint.arch and checkpoint.arch != arch else ""
        raise UserError("{} does not fit {}{}: {}".format(weights, arch, hint, problem))
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:  # dtype or layout surprises describe_mismatch does not cover
        raise UserError("{} does not fit {}: {}".format(weights, arch, str(exc).splitlines()[0][:200])) from None
    model.eval()
    return model, checkpoint
