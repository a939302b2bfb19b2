"""The proof a bundle carries: preprocessed inputs, the PyTorch logits for them, and per-precision tolerances.

``cli.py bundle`` computes them on the machine that has PyTorch and the checkpoint, checks every ONNX model of
the bundle against them on the CPU (ONNX Runtime), and writes ``reference.npz``; ``python -m deploy.check``
reads it on the device and holds every model and engine to the same tolerances. Everything is a plain numpy
array (strings as fixed-width unicode), so ``np.load(..., allow_pickle=False)`` reads it and nothing in it can
run code.
"""
import os
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

from .errors import UserError
from .fileio import atomic_path

REFERENCE_FILE = "reference.npz"
DEFAULT_REFERENCE_IMAGES = 64

# Minimum top-1 agreement with PyTorch and minimum mean cosine similarity of the logits, per precision. They
# are loose enough for another backend's kernels (TensorRT's TF32 for FP32, its own INT8 kernels for the same
# Q/DQ scales: agreement moves by an image or two of 64) and tight enough that a model from other weights or a
# broken conversion fails (a digits model trained from another seed has a logit cosine near 0.9).
PRECISION_TOLERANCES: Dict[str, Dict[str, float]] = {
    "fp32": {"min_top1_agreement": 0.98, "min_cosine": 0.999},
    "fp16": {"min_top1_agreement": 0.95, "min_cosine": 0.999},
    "int8": {"min_top1_agreement": 0.90, "min_cosine": 0.98},
}


def precision_class(precision: str) -> str:
    """The tolerance class of a precision label ("int8-implicit" and "int8 (tensorrt)" are int8)."""
    label = str(precision or "fp32").lower()
    for name in ("int8", "fp16"):
        if name in label:
            return name
    return "fp32"


@dataclass
class ReferenceData:
    """What ``reference.npz`` holds."""

    inputs: np.ndarray                     # (N, 3, S, S) float32, through the models' own preprocessing
    logits: np.ndarray                     # (N, C) float32 from the PyTorch original
    labels: Optional[np.ndarray] = None    # (N,) int64 when the images were labeled
    arch: str = ""
    checkpoint_sha256: str = ""            # of the weights PyTorch ran: every artifact must have been made from them
    source: str = ""                       # where the images came from
    tolerances: Dict[str, Dict[str, float]] = field(default_factory=lambda: {
        name: dict(values) for name, values in PRECISION_TOLERANCES.items()})

    def tolerance(self, precision: str) -> Dict[str, float]:
        return self.tolerances[precision_class(precision)]


def save_reference(path: str, reference: ReferenceData) -> str:
    arrays = {
        "inputs": np.ascontiguousarray(reference.inputs, dtype=np.float32),
        "logits": np.ascontiguousarray(reference.logits, dtype=np.float32),
        "arch": np.array(reference.arch),
        "checkpoint_sha256": np.array(reference.checkpoint_sha256),
        "source": np.array(reference.source),
        "tolerance_precisions": np.array(sorted(reference.tolerances)),
        "tolerance_min_top1_agreement": np.array(
            [reference.tolerances[p]["min_top1_agreement"] for p in sorted(reference.tolerances)], dtype=np.float64),
        "tolerance_min_cosine": np.array(
            [reference.tolerances[p]["min_cosine"] for p in sorted(reference.tolerances)], dtype=np.float64),
    }
    if reference.labels is not None:
        arrays["labels"] = np.asarray(reference.labels, dtype=np.int64)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a file object, so numpy does not append .npz to the temporary name
            np.savez_compressed(handle, **arrays)
    return path


def load_reference(path: str) -> ReferenceData:
    """Read ``reference.npz`` with pickling off; UserError when it is missing or not one of ours."""
    if not os.path.isfile(path):
        raise UserError("no reference data at {}: make the bundle with `cli.py bundle` (without --no-reference)"
                        .format(path))
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise UserError("cannot read reference data {}: {}".format(path, exc)) from None
    missing = [name for name in ("inputs", "logits", "tolerance_precisions") if name not in arrays]
    if missing:
        raise UserError("{} is not eca-deploy reference data (missing {})".format(path, ", ".join(missing)))
    precisions = [str(p) for p in arrays["tolerance_precisions"]]
    tolerances = {p: {"min_top1_agreement": float(arrays["tolerance_min_top1_agreement"][i]),
                      "min_cosine": float(arrays["tolerance_min_cosine"][i])} for i, p in enumerate(precisions)}
    inputs, logits = arrays["inputs"], arrays["logits"]
    if inputs.ndim != 4 or logits.ndim != 2 or len(inputs) != len(logits) or not len(inputs):
        raise UserError("{}: inputs {} and logits {} do not fit together".format(path, inputs.shape, logits.shape))
    return ReferenceData(inputs=inputs, logits=logits, labels=arrays.get("labels"), arch=str(arrays["arch"]),
                         checkpoint_sha256=str(arrays["checkpoint_sha256"]), source=str(arrays["source"]),
                         tolerances=tolerances)
