"""The proof a bundle carries: the reference images, PyTorch's logits for them, and per model the bar the device
must reach, derived from what that model measured on the CPU before bundling.

``eca-deploy bundle`` makes it where PyTorch and the checkpoint are: it runs every ONNX model of the bundle in ONNX
Runtime on the reference images, stores the top-1 agreement and logit cosine each one measured, and from them the
bar (``bar_from_measured``). ``python -m deploy.check`` reads it on the device and holds every model and engine
to its bar. The file also carries a few source images with the tensors the project's preprocessing made from them,
so the device's own decoding and resizing (JetPack's Pillow and numpy) are checked too.

Everything is a plain numpy array (strings as fixed-width unicode), so ``np.load(..., allow_pickle=False)`` reads
it and nothing in it can run code. The images are stored as the uint8 crops the preprocessing normalizes (4x
smaller than float32) whenever that round trip is exact; ``load_reference`` checks every field and turns any
damage into one UserError naming the file and the field.
"""
import json
import math
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from .errors import UserError
from .preprocess import PreprocessSpec, input_from_pixels
from .text import escape_controls

# 3: the sha256 of every bundled file (file_names, file_sha256) and, per model, its kernel noise and the class and
# margin it gave each image on the CPU (the near-tie rule); a format-2 proof binds neither, so it is refused.
REFERENCE_FORMAT = 3
DEFAULT_REFERENCE_IMAGES = 256
PROBE_FOLDER = "proof"        # the source images of the preprocessing check, inside the bundle
PROBE_IMAGES = 8
MAX_PROBE_BYTES = 4 << 20     # a source file larger than this is not shipped as a probe
# The most one array of the file may expand to: a damaged or hostile file must not exhaust a Jetson's memory.
MAX_ARRAY_BYTES = 2 << 30
# The most the reader may hold at once: every array it loads, with the uint8 crops expanded to float32 inputs
# (twice: the per-crop arrays and their stack). 256 images at 224 px need 0.35 GB; the file itself may not be
# larger either. Shapes are read from each member's header and checked against it before any array is loaded.
MAX_REFERENCE_BYTES = 2 << 30
# The members save_reference writes (bundling/proof.py); anything else in the file is never loaded.
REFERENCE_MEMBERS = frozenset((
    "format", "logits", "preprocess", "arch", "checkpoint_sha256", "source", "min_agreement", "bar_names",
    "bar_sha256", "bar_precisions", "bar_measured_top1", "bar_measured_cosine", "bar_required_top1",
    "bar_required_cosine", "bar_allowance_images", "bar_kernel_flips", "bar_other_order_cosine", "bar_cpu_classes",
    "bar_cpu_margins", "bar_image_noise", "file_names", "file_sha256", "probe_files", "probe_inputs", "labels",
    "pixels", "inputs", "nvinfer_models", "nvinfer_geometries", "nvinfer_applied", "nvinfer_agreement"))

# How far another backend's kernels may move a model from what it measured on the CPU. The kernel-order study
# (docs/INT8.md; `python -m benchmark.bench_int8_goal`) ran the same INT8 models in ONNX Runtime with and without
# graph optimizations, i.e. the same arithmetic in another order of float operations: 1 of 397 unseen digits
# changed class per model. A CPU cannot resolve a TensorRT engine more finely than that, so the device may lose
# twice that rate, rounded up to whole images (2 of 256). Models with many near-ties move more: the bundle runs
# each model both ways on the reference images too, and the images whose class the order alone changed widen
# that model's allowance (a width-0.25 digits MobileNetV2 flipped 8 of 256).
KERNEL_ORDER_FLIP_RATE = 1.0 / 397
ALLOWANCE_FACTOR = 2
# The logit error (1 - cosine) may at most double, and is never held tighter than what FP32 with TF32 kernels
# (TensorRT's default on Ampere and later) and FP16 accumulation give a correct engine.
COSINE_SLACK = {"fp32": 1e-4, "fp16": 1e-3, "int8": 1e-3}
# Floors below which a model is broken, not merely imprecise (another checkpoint's digits model has a logit cosine
# near 0.9): the bundle refuses a model that misses them on the CPU, and no bar is ever below them.
FLOORS = {"fp32": {"top1": 98.0, "cosine": 0.999}, "fp16": {"top1": 95.0, "cosine": 0.999},
          "int8": {"top1": 90.0, "cosine": 0.98}}
# The device's preprocessing of the probe images may differ from the project's by at most one pixel level (a
# JPEG decoder's rounding); more means the device feeds the engines other inputs than the ones it was checked on.
PREPROCESS_TOLERANCE_LEVELS = 1.0
# Two logits that each move by up to the kernel noise change their difference (the top-1 margin) by up to twice it:
# an image whose margin on the CPU exceeds that cannot change class by the order of operations alone.
NEAR_TIE_FACTOR = 2.0
SHA256_HEX = re.compile("[0-9a-f]{64}")
# JPEG probes (the bundle encodes some reference images as JPEG: baseline and progressive, 4:2:0 and 4:4:4) are
# decoded by the device's libjpeg, whose IDCT and chroma upsampling differ between builds. Measured 2026-12-06 on
# 17 images (digits and the sample photos), every variant, against this machine's Pillow 13 (libjpeg-turbo):
# JetPack 6's stack (Pillow 9.0.1, libjpeg-turbo) 0 levels everywhere; JetPack 5's stack (Pillow 7.0.0's wheel,
# IJG libjpeg 9) 1 level on 4:4:4 and on the digits, and on 4:2:0 photos up to 22 levels at colour edges with a
# per-image mean of at most 0.50 level. So a JPEG probe is held to twice what the decoders measured: a mean of 1
# level and a largest difference of 44; a wrong decode (flipped, other colours, DCT-scaled) is off by tens of
# levels on average. Other formats decode exactly and keep the one-level bar (resampling's rounding).
JPEG_TOLERANCE_MEAN_LEVELS = 1.0
JPEG_TOLERANCE_MAX_LEVELS = 44.0
JPEG_SUFFIXES = (".jpg", ".jpeg")


def precision_class(precision: str) -> str:
    """The bar class of a precision label ("int8-implicit" and "int8 (tensorrt)" are int8)."""
    label = str(precision or "fp32").lower()
    for name in ("int8", "fp16"):
        if name in label:
            return name
    return "fp32"


def allowance_images(num_images: int, kernel_flips: int = 0) -> int:
    """Images a device may lose against the CPU's measured agreement: the study's rate (KERNEL_ORDER_FLIP_RATE),
    or the images whose class the order of operations alone changed for this model, whichever is more."""
    return max(1, int(math.ceil(ALLOWANCE_FACTOR * KERNEL_ORDER_FLIP_RATE * num_images)), int(kernel_flips))


def top1_margins(logits: np.ndarray) -> np.ndarray:
    """Per image, the top-1 logit less the second: how far the decision is from a tie."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[1] < 2:  # one class: nothing to change to; the largest finite margin, so the proof stores it
        return np.full(len(logits), np.finfo(np.float32).max)
    top = np.partition(logits, -2, axis=1)
    return top[:, -1] - top[:, -2]


def noise_floor(precision: str, reference_logits: np.ndarray) -> np.ndarray:
    """Per image, the least logit change a device is granted: the one its cosine slack (COSINE_SLACK) allows.
    The CPU cannot show TF32 or FP16 accumulation, so its measured noise may be far below a correct engine's.
    Two logits moving by a each change 1 - cosine by at most a^2 / |x|^2, so a = sqrt(slack) * |x|."""
    norms = np.linalg.norm(np.asarray(reference_logits, dtype=np.float64), axis=1)
    return math.sqrt(COSINE_SLACK[precision_class(precision)]) * norms


@dataclass
class ArtifactBar:
    """What one bundled model measured on the CPU (percent, cosine) and what the device must reach."""

    name: str
    sha256: str
    precision: str
    measured_top1: float      # % top-1 agreement with PyTorch on the reference images, on the CPU
    measured_cosine: float
    required_top1: float      # % the device must reach
    required_cosine: float
    allowance_images: int = 1  # images the device may lose for its kernels (allowance_images())
    kernel_flips: int = 0      # images whose class the order of operations alone changed on the CPU
    floor_only: bool = False   # FLOORS alone (floor_bar), before anything was measured; never stored
    other_order_cosine: Optional[float] = None  # the cosine of the other order of operations, when measured
    kernel_noise: float = 0.0  # the largest logit change the orders of operations caused on the CPU, any image
    cpu_classes: Optional[np.ndarray] = None   # (N,) the class this model gave each image on the CPU
    cpu_margins: Optional[np.ndarray] = None   # (N,) and its top-1 margin there (top1_margins)
    image_noise: Optional[np.ndarray] = None   # (N,) the largest logit change the orders caused on each image

    def to_dict(self) -> Dict[str, object]:
        return {"name": self.name, "precision": self.precision, "measured_top1_agreement": self.measured_top1,
                "measured_cosine": self.measured_cosine, "required_top1_agreement": self.required_top1,
                "required_cosine": self.required_cosine, "allowance_images": self.allowance_images,
                "kernel_flips": self.kernel_flips, "kernel_noise": self.kernel_noise}

    def near_tie_tolerance(self, reference_logits: np.ndarray) -> np.ndarray:
        """Per image, the top-1 margin within which the device's kernels alone may change this model's class:
        NEAR_TIE_FACTOR times the kernel noise the CPU measured on that image, or the noise floor, whichever is
        more. Per image, because a kernel's rounding moves a logit in proportion to the activations that made it:
        the largest change on any image would make near ties of images decided far above their own noise."""
        noise = self.kernel_noise if self.image_noise is None else self.image_noise
        return NEAR_TIE_FACTOR * np.maximum(noise, noise_floor(self.precision, reference_logits))

    def near_ties(self, reference_logits: np.ndarray) -> Optional[np.ndarray]:
        """(N,) bool: the images this model decided on the CPU within the noise; None when nothing was stored."""
        if self.cpu_margins is None:
            return None
        return self.cpu_margins <= self.near_tie_tolerance(reference_logits)


def bar_from_measured(name: str, sha256: str, precision: str, top1_percent: float, cosine: float,
                      num_images: int, min_agreement: Optional[float] = None, kernel_flips: int = 0,
                      other_order_cosine: Optional[float] = None, kernel_noise=0.0,
                      cpu_logits: Optional[np.ndarray] = None) -> ArtifactBar:
    """The device's bar for a model that measured ``top1_percent`` and ``cosine`` on ``num_images`` images: the
    measured agreement less the kernel allowance (``kernel_flips``: images the other order of operations changed),
    and the logit error at most double the larger of the two orders' (COSINE_SLACK at least); never below the
    user's ``min_agreement`` nor the precision's FLOORS. ``cpu_logits`` (what the model gave on the CPU) and
    ``kernel_noise`` (the largest logit change between the orders, per image or one for all) let the device tell a
    near tie that its kernels may flip from a decided image, which must keep its class (ArtifactBar.near_ties)."""
    floor = FLOORS[precision_class(precision)]
    allowed = allowance_images(num_images, kernel_flips)
    required = max(top1_percent - 100.0 * allowed / num_images, floor["top1"],
                   float(min_agreement) if min_agreement is not None else 0.0)
    worst = min(cosine, cosine if other_order_cosine is None else other_order_cosine)
    error = max(ALLOWANCE_FACTOR * (1.0 - worst), COSINE_SLACK[precision_class(precision)])
    classes = margins = image_noise = None
    if cpu_logits is not None:
        classes = np.argmax(cpu_logits, axis=1).astype(np.int64)
        margins = top1_margins(cpu_logits).astype(np.float32)
        image_noise = np.broadcast_to(np.asarray(kernel_noise, dtype=np.float32), (len(cpu_logits),)).copy()
    return ArtifactBar(name, sha256, precision, float(top1_percent), float(cosine), float(required),
                       float(max(1.0 - error, floor["cosine"])), allowed, int(kernel_flips),
                       other_order_cosine=None if other_order_cosine is None else float(other_order_cosine),
                       # float32, as the proof stores it: the device reads back the very bar the bundle printed
                       kernel_noise=float(np.max(np.asarray(kernel_noise, dtype=np.float32))), cpu_classes=classes,
                       cpu_margins=margins,
                       image_noise=image_noise)


def floor_bar(name: str, precision: str) -> ArtifactBar:
    """The bar of FLOORS alone: what the bundle holds a model to before it measures its real bar."""
    floor = FLOORS[precision_class(precision)]
    return ArtifactBar(name, "", precision, floor["top1"], floor["cosine"], floor["top1"], floor["cosine"],
                       floor_only=True)


@dataclass
class ReferenceData:
    """What ``reference.npz`` holds. ``inputs`` are the network inputs (N, 3, S, S) float32."""

    inputs: np.ndarray
    logits: np.ndarray                     # (N, C) float32 from the PyTorch original
    spec: PreprocessSpec
    labels: Optional[np.ndarray] = None    # (N,) int64 when the images were labeled
    arch: str = ""
    checkpoint_sha256: str = ""            # of the weights PyTorch ran: every artifact must have been made from them
    source: str = ""                       # where the images came from
    bars: List[ArtifactBar] = field(default_factory=list)
    min_agreement: Optional[float] = None  # the user's floor (percent), part of every bar
    probe_files: List[str] = field(default_factory=list)   # relative to the bundle, the preprocessing check's
    probe_inputs: Optional[np.ndarray] = None               # (K, 3, S, S): what the project made of them
    # every file the bundle binds (models, their data and sidecars, caches, labels, probes, the consumers' copies):
    # its path inside the bundle -> its sha256 when the bundle was made; deploy.check holds the files to it
    files: Dict[str, str] = field(default_factory=dict)
    # per bundled model, DeepStream's scaling measured on the CPU: {model: {"applied": geometry, geometry: top-1
    # agreement (percent) with the model on the project's own preprocessing}} (bundling.ecosystem.nvinfer_scaling)
    nvinfer: Dict[str, Dict[str, object]] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return int(len(self.inputs))

    def bar_named(self, name: str) -> Optional[ArtifactBar]:
        return next((bar for bar in self.bars if bar.name == name), None)

    def bar_with_sha256(self, sha256: str) -> Optional[ArtifactBar]:
        return next((bar for bar in self.bars if sha256 and bar.sha256 == sha256), None)

    def summary(self) -> Dict[str, object]:
        return {"images": self.num_images, "input_shape": list(self.inputs.shape[1:]),
                "classes": int(self.logits.shape[1]), "labeled": self.labels is not None, "arch": self.arch,
                "checkpoint_sha256": self.checkpoint_sha256, "source": self.source,
                "min_agreement": self.min_agreement, "bound_files": len(self.files),
                "bars": [bar.to_dict() for bar in self.bars], "deepstream_scaling": self.nvinfer}


# -- reading, every field checked --------------------------------------------------------------------------------

class _Fields:
    """The arrays of one reference file, each checked as it is taken; errors name the file and the field."""

    def __init__(self, path: str, arrays: Dict[str, np.ndarray]):
        self.path, self.arrays = path, arrays

    def fail(self, name: str, problem: str) -> UserError:
        return UserError("{} is damaged: field {} {}; rebuild the bundle with `eca-deploy bundle`".format(
            self.path, name, escape_controls(problem)))

    def refuse(self, name: str, problem: str) -> UserError:
        """A field that reads well but breaks the proof's own rules (docs/PROOF.md): an edited bar."""
        return UserError("{}: field {} {}, against the proof's own rules (docs/PROOF.md); rebuild the bundle with "
                         "`eca-deploy bundle`".format(self.path, name, escape_controls(problem)))

    def array(self, name: str, kinds: str, ndim: int, optional: bool = False) -> Optional[np.ndarray]:
        if name not in self.arrays:
            if optional:
                return None
            raise self.fail(name, "is missing")
        value = self.arrays[name]
        if value.dtype.kind not in kinds or value.ndim != ndim:
            raise self.fail(name, "has dtype {} and {} dimension(s)".format(value.dtype, value.ndim))
        return value

    def text(self, name: str) -> str:
        return str(self.array(name, "U", 0))

    def finite(self, name: str, kinds: str, ndim: int, optional: bool = False) -> Optional[np.ndarray]:
        value = self.array(name, kinds, ndim, optional)
        if value is not None and value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise self.fail(name, "holds NaN or infinite values")
        return value


def _member_header(archive, info):
    """(shape, dtype) from the .npy header of one zip member, read without its data."""
    with archive.open(info) as handle:
        version = np.lib.format.read_magic(handle)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(handle)
    return tuple(int(d) for d in shape), np.dtype(dtype)


def member_bytes(name: str, shape, dtype) -> int:
    """What loading member ``name`` costs in memory: its own bytes, and for uint8 crops (N, S, S, 3) also the
    float32 inputs made from them, twice (to_model_input per crop, then their stack)."""
    count = 1
    for dim in shape:
        count *= max(int(dim), 0)
    cost = count * dtype.itemsize
    if name == "pixels":
        cost += 2 * count * 4
    return cost


def check_reference_size(path: str, needed: int) -> None:
    if needed > MAX_REFERENCE_BYTES:
        raise UserError("{}: the reference data would take {:.2f} GB in memory, more than the {:.0f} GB a device "
                        "is asked to hold; use fewer --reference-images".format(
                            path, needed / 1e9, MAX_REFERENCE_BYTES / 1e9))


def _read_arrays(path: str) -> Dict[str, np.ndarray]:
    """The known members of the file, each loaded only after its header's shape passed the size bound."""
    try:
        size = os.path.getsize(path)
        if size > MAX_REFERENCE_BYTES:
            raise UserError("{} is {:.2f} GB, larger than any reference file (at most {:.0f} GB); it is damaged or "
                            "not a reference file".format(path, size / 1e9, MAX_REFERENCE_BYTES / 1e9))
        if not zipfile.is_zipfile(path):  # np.load would read a bare .npy whole, whatever its size
            raise UserError("{} is not a reference file (not an .npz archive); rebuild the bundle".format(path))
        with np.load(path, allow_pickle=False) as data:
            members = {}
            for info in data.zip.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if name not in REFERENCE_MEMBERS or name in members:
                    continue  # unknown members are never loaded: they could be any size
                members[name] = info
            total = 0
            for name, info in members.items():
                shape, dtype = _member_header(data.zip, info)
                cost = member_bytes(name, shape, dtype)
                if cost > MAX_ARRAY_BYTES:
                    raise UserError("{}: {} {} would take {:.1f} GB in memory, more than a reference file "
                                    "needs".format(path, name, shape, cost / 1e9))
                total += cost
                check_reference_size(path, total)
            return {name: data[name] for name in members}
    except UserError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        # A truncated or overwritten file: numpy and zipfile raise any of these, sometimes deep in decompression.
        raise UserError("cannot read reference data {}: {} (damaged or not a reference file; rebuild the bundle)"
                        .format(path, str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)) from None


def _images(fields: _Fields, spec: PreprocessSpec) -> np.ndarray:
    pixels = fields.array("pixels", "u", 4, optional=True)
    if pixels is not None:
        if pixels.dtype != np.uint8 or pixels.shape[-1] != 3 or pixels.shape[1] != pixels.shape[2]:
            raise fields.fail("pixels", "must be uint8 RGB crops (N, S, S, 3), got {} {}".format(
                pixels.dtype, pixels.shape))
        if not len(pixels):  # np.stack of no crops is a ValueError deep in numpy
            raise fields.fail("pixels", "holds no images")
        if pixels.shape[1] != spec.input_size:  # checked on the crops, before they are expanded to float32
            raise fields.fail("preprocess", "says input size {}, the images are {}x{}".format(
                spec.input_size, pixels.shape[1], pixels.shape[2]))
        inputs = input_from_pixels(pixels, spec)
    else:
        inputs = fields.finite("inputs", "f", 4)
        if inputs.shape[1] != 3 or inputs.shape[2] != inputs.shape[3]:
            raise fields.fail("inputs", "must be RGB network inputs (N, 3, S, S), got {}".format(inputs.shape))
        inputs = inputs.astype(np.float32, copy=False)
    if not len(inputs):
        raise fields.fail("pixels" if pixels is not None else "inputs", "holds no images")
    if inputs.shape[-1] != spec.input_size:
        raise fields.fail("preprocess", "says input size {}, the images are {}x{}".format(
            spec.input_size, inputs.shape[-2], inputs.shape[-1]))
    return inputs


def _bars(fields: _Fields, num_images: int, num_classes: int) -> List[ArtifactBar]:
    names = fields.array("bar_names", "U", 1)
    columns = {name: fields.finite(name, "f", 1) for name in (
        "bar_measured_top1", "bar_measured_cosine", "bar_required_top1", "bar_required_cosine")}
    texts = {name: fields.array(name, "U", 1) for name in ("bar_sha256", "bar_precisions")}
    counts = {name: fields.array(name, "iu", 1) for name in ("bar_allowance_images", "bar_kernel_flips")}
    other = fields.array("bar_other_order_cosine", "f", 1)  # NaN where the other order was not measured
    for name, column in list(columns.items()) + list(texts.items()) + list(counts.items()) + [
            ("bar_other_order_cosine", other)]:
        if len(column) != len(names):
            raise fields.fail(name, "has {} entries for {} models".format(len(column), len(names)))
    if not len(names):
        raise fields.fail("bar_names", "lists no models")
    for name in ("bar_measured_top1", "bar_required_top1"):
        if np.any(columns[name] < 0) or np.any(columns[name] > 100):
            raise fields.fail(name, "must be percentages from 0 to 100")
    for name in ("bar_measured_cosine", "bar_required_cosine"):
        if np.any(np.abs(columns[name]) > 1):
            raise fields.fail(name, "must be cosines from -1 to 1")
    if np.any(counts["bar_allowance_images"] < 1) or np.any(counts["bar_kernel_flips"] < 0):
        raise fields.fail("bar_allowance_images", "must count images (at least 1)")
    if np.any(np.abs(other[~np.isnan(other)]) > 1):
        raise fields.fail("bar_other_order_cosine", "must be cosines from -1 to 1")
    classes = fields.array("bar_cpu_classes", "iu", 2)
    margins = fields.finite("bar_cpu_margins", "f", 2)
    noise = fields.finite("bar_image_noise", "f", 2)
    for name, table in (("bar_cpu_classes", classes), ("bar_cpu_margins", margins), ("bar_image_noise", noise)):
        if table.shape != (len(names), num_images):
            raise fields.fail(name, "has shape {} for {} models and {} images".format(
                table.shape, len(names), num_images))
    if np.any(classes >= num_classes) or np.any(margins < 0) or np.any(noise < 0):
        raise fields.fail("bar_cpu_classes", "must hold class indices below {}, and margins and logit changes of 0 "
                          "or more".format(num_classes))
    return [ArtifactBar(str(names[i]), str(texts["bar_sha256"][i]), str(texts["bar_precisions"][i]),
                        float(columns["bar_measured_top1"][i]), float(columns["bar_measured_cosine"][i]),
                        float(columns["bar_required_top1"][i]), float(columns["bar_required_cosine"][i]),
                        int(counts["bar_allowance_images"][i]), int(counts["bar_kernel_flips"][i]),
                        other_order_cosine=None if np.isnan(other[i]) else float(other[i]),
                        kernel_noise=float(np.max(noise[i])), cpu_classes=classes[i].astype(np.int64),
                        cpu_margins=margins[i].astype(np.float32), image_noise=noise[i].astype(np.float32))
            for i in range(len(names))]


def bundle_path_ok(name: str) -> bool:
    """Whether ``name`` is a relative path inside the bundle written with '/', free of '..' and control
    characters: a name read from a proof or manifest is opened, so it must not leave the bundle."""
    parts = name.split("/")
    return bool(name) and not os.path.isabs(name) and "\\" not in name and ".." not in parts and "" not in parts \
        and escape_controls(name) == name


def _files(fields: _Fields) -> Dict[str, str]:
    """file_names -> file_sha256: what every bound file of the bundle was when it was made."""
    names = [str(name) for name in fields.array("file_names", "U", 1)]
    digests = [str(digest) for digest in fields.array("file_sha256", "U", 1)]
    if len(digests) != len(names):
        raise fields.fail("file_sha256", "has {} entries for {} files".format(len(digests), len(names)))
    if not names:
        raise fields.fail("file_names", "lists no files")
    bad = next((name for name in names if not bundle_path_ok(name)), None)
    if bad is not None:
        raise fields.fail("file_names", "must name files inside the bundle, not {!r}".format(bad))
    if len(set(names)) != len(names):
        raise fields.fail("file_names", "names {} twice".format(next(n for n in names if names.count(n) > 1)))
    bad = next((digest for digest in digests if not SHA256_HEX.fullmatch(digest)), None)
    if bad is not None:
        raise fields.fail("file_sha256", "must hold sha256 digests (64 hex digits), not {!r}".format(bad[:80]))
    return dict(zip(names, digests))


def _check_rules(fields: _Fields, bars: List[ArtifactBar], files: Dict[str, str], min_agreement: Optional[float],
                 num_images: int) -> None:
    """The proof obeys the rules it states: each model has one bar, bound to its file's sha256, that is exactly
    what bar_from_measured derives from what the model measured; nothing below FLOORS (the bundle refuses such a
    model); and a min_agreement every model measured. An edited bar is refused, never applied."""
    if min_agreement is not None and not 0.0 <= min_agreement <= 100.0:
        raise fields.refuse("min_agreement", "is {:g}%, not a percentage".format(min_agreement))
    seen = set()
    for bar in bars:
        if bar.name in seen:
            raise fields.refuse("bar_names", "names {} twice".format(bar.name))
        seen.add(bar.name)
        if not bundle_path_ok(bar.name) or "/" in bar.name:
            raise fields.fail("bar_names", "must name files of the bundle's top folder, not {!r}".format(bar.name))
        if files.get(bar.name) != bar.sha256:
            raise fields.refuse("bar_sha256", "of {} is {}, but file_sha256 records {}".format(
                bar.name, bar.sha256[:80] or "empty", files.get(bar.name, "no such file")))
        floor = FLOORS[precision_class(bar.precision)]
        if bar.measured_top1 < floor["top1"] or bar.measured_cosine < floor["cosine"]:
            raise fields.refuse("bar_measured_top1", "of {} is {:.2f}% (cosine {:.5f}), below the floor of a working "
                                "{} model ({:.0f}% / {:g}), which the bundle refuses".format(
                                    bar.name, bar.measured_top1, bar.measured_cosine, precision_class(bar.precision),
                                    floor["top1"], floor["cosine"]))
        if min_agreement is not None and bar.measured_top1 < min_agreement:
            raise fields.refuse("min_agreement", "is {:g}%, above the {:.2f}% {} measured, which the bundle "
                                "refuses".format(min_agreement, bar.measured_top1, bar.name))
        rule = bar_from_measured(bar.name, bar.sha256, bar.precision, bar.measured_top1, bar.measured_cosine,
                                 num_images, min_agreement, bar.kernel_flips, bar.other_order_cosine)
        for what, stored, derived in (("bar_required_top1", bar.required_top1, rule.required_top1),
                                      ("bar_required_cosine", bar.required_cosine, rule.required_cosine),
                                      ("bar_allowance_images", bar.allowance_images, rule.allowance_images)):
            if abs(stored - derived) > 1e-9 * max(1.0, abs(derived)):
                raise fields.refuse(what, "of {} is {:.6g}, but its measured figures give {:.6g}".format(
                    bar.name, stored, derived))


def _spec(fields: _Fields) -> PreprocessSpec:
    try:
        meta = json.loads(fields.text("preprocess"))
        if not isinstance(meta, dict):
            raise ValueError("not an object")
        return PreprocessSpec.from_metadata({str(k): str(v) for k, v in meta.items()})
    except (ValueError, UserError, RecursionError) as exc:  # "[" * 100000 is a RecursionError in json
        raise fields.fail("preprocess", "is not a preprocessing record ({})".format(
            str(exc)[:120] or type(exc).__name__)) from None


def _nvinfer(fields: _Fields) -> Dict[str, Dict[str, object]]:
    """The optional DeepStream scaling measurements (absent from bundles made before they were measured)."""
    models = fields.array("nvinfer_models", "U", 1, optional=True)
    if models is None:
        return {}
    geometries = [str(g) for g in fields.array("nvinfer_geometries", "U", 1)]
    applied = [str(g) for g in fields.array("nvinfer_applied", "U", 1)]
    agreement = fields.finite("nvinfer_agreement", "f", 2)
    if agreement.shape != (len(models), len(geometries)) or len(applied) != len(models):
        raise fields.fail("nvinfer_agreement", "must hold one agreement per model and geometry")
    measured: Dict[str, Dict[str, object]] = {}
    for model, chosen, row in zip(models, applied, agreement):
        measured[str(model)] = dict({g: float(v) for g, v in zip(geometries, row)}, applied=chosen)
    return measured


def load_reference(path: str) -> ReferenceData:
    """Read ``reference.npz`` with pickling off; one UserError naming the file and field when it is missing,
    damaged, from another format, or inconsistent (labels shorter than the images, 1-channel inputs, ...)."""
    if not os.path.isfile(path):
        raise UserError("no reference data at {}: the bundle was made without it; make it again with `cli.py "
                        "bundle ... --weights CHECKPOINT --data IMAGES` (or `eca-deploy pipeline --bundle`)".format(path))
    fields = _Fields(path, _read_arrays(path))
    version = fields.array("format", "iu", 0, optional=True)
    if version is None or int(version) != REFERENCE_FORMAT:
        raise UserError("{} is reference data of format {}, this deploy/ reads format {}; rebuild the bundle".format(
            path, "1" if version is None else int(version), REFERENCE_FORMAT))
    spec = _spec(fields)
    inputs = _images(fields, spec)
    logits = fields.finite("logits", "f", 2)
    if len(logits) != len(inputs) or logits.shape[1] < 1:
        raise fields.fail("logits", "has shape {} for {} images".format(logits.shape, len(inputs)))
    labels = fields.array("labels", "iu", 1, optional=True)
    if labels is not None and (len(labels) != len(inputs) or np.any(labels < 0) or
                               np.any(labels >= logits.shape[1])):
        raise fields.fail("labels", "must hold one class index below {} per image ({} images, {} labels)".format(
            logits.shape[1], len(inputs), len(labels)))
    floor = fields.array("min_agreement", "f", 0)
    probes = [str(name) for name in fields.array("probe_files", "U", 1)]
    probe_inputs = fields.finite("probe_inputs", "f", 4, optional=not probes)
    if probes and (probe_inputs is None or len(probe_inputs) != len(probes) or
                   probe_inputs.shape[1:] != inputs.shape[1:]):
        raise fields.fail("probe_inputs", "must hold one input per probe image ({})".format(len(probes)))
    if any(os.path.isabs(name) or ".." in name.replace("\\", "/").split("/") for name in probes):
        raise fields.fail("probe_files", "must name files inside the bundle")
    min_agreement = None if np.isnan(floor) else float(floor)
    bars, files = _bars(fields, len(inputs), logits.shape[1]), _files(fields)
    _check_rules(fields, bars, files, min_agreement, len(inputs))
    unbound = next((name for name in probes if name not in files), None)
    if unbound is not None:
        raise fields.refuse("file_names", "lacks the probe image {}".format(unbound))
    return ReferenceData(inputs=inputs, logits=logits.astype(np.float32, copy=False), spec=spec,
                         labels=None if labels is None else labels.astype(np.int64),
                         arch=fields.text("arch"), checkpoint_sha256=fields.text("checkpoint_sha256"),
                         source=fields.text("source"), bars=bars, min_agreement=min_agreement, probe_files=probes,
                         probe_inputs=None if probe_inputs is None else probe_inputs.astype(np.float32), files=files,
                         nvinfer=_nvinfer(fields))


def pick_probes(paths: Sequence[str], count: int = PROBE_IMAGES) -> List[int]:
    """Indices of up to ``count`` reference images whose source files are small regular files: they travel so the
    device's decoder and resizer are checked on the user's own format."""
    chosen = []
    for index, path in enumerate(paths):
        if not bundle_path_ok(os.path.basename(path)):  # its name could not be bound in the proof
            continue
        try:
            if os.path.isfile(path) and os.path.getsize(path) <= MAX_PROBE_BYTES:
                chosen.append(index)
        except OSError:
            continue
        if len(chosen) == count:
            break
    return chosen
