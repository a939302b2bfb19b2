"""Writing ``reference.npz``, the proof a bundle carries (its format, bars and reader are in deploy.reference).

Only the host writes a proof; the device only reads it, so the writer stays out of the deploy/ runtime.
"""
import json
from typing import Dict

import numpy as np

from deploy.fileio import atomic_path
from deploy.preprocess import input_from_pixels, pixels_from_input
from deploy.reference import REFERENCE_FORMAT, ReferenceData, check_reference_size, member_bytes


# -- writing (the reader, with every field checked, is deploy.reference.load_reference) ---------------------------------------------------------------------------------------------------

def _image_arrays(reference: ReferenceData) -> Dict[str, np.ndarray]:
    """The uint8 crops when they give back the inputs bit for bit, else the float32 inputs themselves."""
    inputs = np.ascontiguousarray(reference.inputs, dtype=np.float32)
    pixels = pixels_from_input(inputs, reference.spec)
    if pixels is not None and np.array_equal(input_from_pixels(pixels, reference.spec), inputs):
        return {"pixels": pixels}
    return {"inputs": inputs}


def _per_image(values, reference: ReferenceData, name: str) -> np.ndarray:
    """A bar's per-image record; every stored bar has one (bar_from_measured with the model's CPU logits)."""
    if values is None or len(values) != reference.num_images:
        raise ValueError("the bar of {} holds no per-image record of its CPU run".format(name))
    return np.asarray(values)


def save_reference(path: str, reference: ReferenceData) -> str:
    """Write ``reference``; its ``files`` must already hold the sha256 of every file the bundle binds."""
    bars = reference.bars
    arrays = dict(_image_arrays(reference), **{
        "format": np.array(REFERENCE_FORMAT),
        "logits": np.ascontiguousarray(reference.logits, dtype=np.float32),
        "preprocess": np.array(json.dumps(reference.spec.to_metadata(), sort_keys=True)),
        "arch": np.array(reference.arch),
        "checkpoint_sha256": np.array(reference.checkpoint_sha256),
        "source": np.array(reference.source),
        "min_agreement": np.array(np.nan if reference.min_agreement is None else reference.min_agreement,
                                  dtype=np.float64),
        "bar_names": np.array([b.name for b in bars], dtype=str),
        "bar_sha256": np.array([b.sha256 for b in bars], dtype=str),
        "bar_precisions": np.array([b.precision for b in bars], dtype=str),
        "bar_measured_top1": np.array([b.measured_top1 for b in bars], dtype=np.float64),
        "bar_measured_cosine": np.array([b.measured_cosine for b in bars], dtype=np.float64),
        "bar_required_top1": np.array([b.required_top1 for b in bars], dtype=np.float64),
        "bar_required_cosine": np.array([b.required_cosine for b in bars], dtype=np.float64),
        "bar_allowance_images": np.array([b.allowance_images for b in bars], dtype=np.int64),
        "bar_kernel_flips": np.array([b.kernel_flips for b in bars], dtype=np.int64),
        "bar_other_order_cosine": np.array([np.nan if b.other_order_cosine is None else b.other_order_cosine
                                            for b in bars], dtype=np.float64),
        "bar_cpu_classes": np.array([_per_image(b.cpu_classes, reference, b.name) for b in bars], dtype=np.int64),
        "bar_cpu_margins": np.array([_per_image(b.cpu_margins, reference, b.name) for b in bars],
                                    dtype=np.float32),
        "bar_image_noise": np.array([_per_image(b.image_noise, reference, b.name) for b in bars], dtype=np.float32),
        "file_names": np.array(sorted(reference.files), dtype=str),
        "file_sha256": np.array([reference.files[name] for name in sorted(reference.files)], dtype=str),
        "probe_files": np.array(list(reference.probe_files), dtype=str),
    })
    if reference.probe_inputs is not None:
        arrays["probe_inputs"] = np.ascontiguousarray(reference.probe_inputs, dtype=np.float32)
    if reference.nvinfer:
        arrays.update(_nvinfer_arrays(reference.nvinfer))
    if reference.labels is not None:
        arrays["labels"] = np.asarray(reference.labels, dtype=np.int64)
    # the device's reader refuses a proof above this bound, so no bundle carries one it cannot read
    check_reference_size(path, sum(member_bytes(name, array.shape, array.dtype) for name, array in arrays.items()))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a file object, so numpy does not append .npz to the temporary name
            np.savez_compressed(handle, **arrays)
    return path


def _nvinfer_arrays(measured) -> dict:
    """DeepStream's scaling measured per model (deploy.reference._nvinfer reads them back)."""
    models = sorted(measured)
    geometries = sorted({g for row in measured.values() for g in row if g != "applied"})
    return {"nvinfer_models": np.array(models, dtype=str), "nvinfer_geometries": np.array(geometries, dtype=str),
            "nvinfer_applied": np.array([str(measured[m]["applied"]) for m in models], dtype=str),
            "nvinfer_agreement": np.array([[float(measured[m].get(g, np.nan)) for g in geometries] for m in models],
                                          dtype=np.float64)}
