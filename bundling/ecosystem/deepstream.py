"""Gst-nvinfer configs: each bundled model as a DeepStream primary classifier, ``deepstream/<model>.txt``.

nvinfer preprocesses with ``y = net-scale-factor * (x - offsets[c])`` on pixels 0-255: one scale for all channels.
A model that normalizes in its graph (``export --normalize-in-graph``) takes the pixels as they are, which is
exact. Otherwise the per-channel ``(x/255 - mean_c)/std_c`` is approximated as NVIDIA's own ImageNet configs do,
with the mean std; the largest input error that causes is computed here, written into the config and returned
for the bundle README.

Paths in the config are relative to the config file, which is how nvinfer resolves them.
"""
import os
import textwrap
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from deploy.fileio import write_text
from deploy.names import check_label_names, check_read_back
from deploy.text import read_text_lines

from ..formats import keyfile_comment, keyfile_line

from .nvinfer_scaling import GEOMETRIES, GEOMETRY_PROPERTIES, GEOMETRY_WORDS, STRETCH

FOLDER = "deepstream"
# nvinfer's network-mode values, by the engine precision build_engines.sh builds
NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}
# NvBufSurfTransform's interpolation enum (nvinfer's scaling-filter); only the filters that mean the same thing
SCALING_FILTERS = {"nearest": 0, "bilinear": 1}
# what a model resized with another filter (bicubic, lanczos) gets: the config always names its filter, so the
# emulation that measures it (nvinfer_scaling) applies the same one
DEFAULT_SCALING_FILTER = SCALING_FILTERS["bilinear"]


def scaling_filter(interpolation: str) -> int:
    """The scaling-filter the config sets for a model resized with ``interpolation``."""
    return SCALING_FILTERS.get(interpolation, DEFAULT_SCALING_FILTER)
# nvinfer refuses a negative threshold; the default parser keeps only values above both it and 0 (see comment)
CLASSIFIER_THRESHOLD = 0.0
LABEL_SEPARATOR = ";"
# keys nvinfer reads with g_key_file_get_string_list, where ';' separates items
LIST_KEYS = ("output-blob-names",)
COMMENT_WIDTH = 110


@dataclass(frozen=True)
class NormalizationError:
    """How far nvinfer's one-scale input is from the model's exact per-channel normalization."""

    max_abs: float   # in the network's input units, largest over channels and pixels 0-255
    channel: int     # where it is largest
    pixel: int
    levels: float    # the same error in pixel levels (0-255) of that channel

    @property
    def exact(self) -> bool:
        return self.max_abs == 0.0


@dataclass(frozen=True)
class NvinferConfig:
    model: str
    path: str                 # relative to the bundle
    labels_path: str          # relative to the bundle
    net_scale_factor: float
    offsets: Tuple[float, float, float]
    error: NormalizationError
    in_graph: bool

    def describe(self) -> str:
        return describe_error(self.error, self.in_graph)


def nvinfer_normalization(mean: Sequence[float], std: Sequence[float], in_graph: bool):
    """(net-scale-factor, offsets) for a model: exact for in-graph normalization, else the mean-std scale."""
    if in_graph:
        return 1.0, (0.0, 0.0, 0.0)
    return 1.0 / (255.0 * float(np.mean(std))), tuple(255.0 * float(m) for m in mean)


def normalization_error(mean: Sequence[float], std: Sequence[float], in_graph: bool) -> NormalizationError:
    """The largest difference between nvinfer's input and the exact ``(x/255 - mean_c)/std_c``, over every
    pixel value 0-255 of every channel (an in-graph model gets the pixels and does the exact arithmetic itself)."""
    if in_graph or len(set(float(s) for s in std)) == 1:  # the one scale is the model's own: only rounding differs
        return NormalizationError(0.0, 0, 0, 0.0)
    scale, offsets = nvinfer_normalization(mean, std, in_graph)
    pixels = np.arange(256, dtype=np.float64)
    mean_c, std_c = np.asarray(mean, np.float64)[:, None], np.asarray(std, np.float64)[:, None]
    nvinfer = scale * (pixels[None, :] - np.asarray(offsets, np.float64)[:, None])
    exact = (pixels[None, :] / 255.0 - mean_c) / std_c
    error = np.abs(nvinfer - exact)
    channel, pixel = np.unravel_index(int(np.argmax(error)), error.shape)
    worst = float(error[channel, pixel])
    return NormalizationError(worst, int(channel), int(pixel), worst * 255.0 * float(std[channel]))


def describe_error(error: NormalizationError, in_graph: bool = False) -> str:
    if in_graph:
        return "exact (normalization inside the model; nvinfer passes the pixels unchanged)"
    if error.exact:
        return "exact (the same std on every channel)"
    return "largest input error {:.4f} ({:.2f} pixel levels of 255), channel {} at pixel {}".format(
        error.max_abs, error.levels, "RGB"[error.channel], error.pixel)


def write_configs(staging: str, models, measured=None) -> List[NvinferConfig]:
    """deepstream/<model>.txt and deepstream/<model>_labels.txt per model (ecosystem.model.BundledModel);
    ``measured``: {model file: {geometry: agreement, "applied": geometry}} (bundle_reference.deepstream_scaling)."""
    os.makedirs(os.path.join(staging, FOLDER), exist_ok=True)
    written = []
    for unique_id, model in enumerate(models, start=1):
        spec = model.preprocess
        scale, offsets = nvinfer_normalization(spec.mean, spec.std, model.normalize_in_graph)
        config = NvinferConfig(model.file, "{}/{}.txt".format(FOLDER, model.stem),
                               "{}/{}_labels.txt".format(FOLDER, model.stem), scale, offsets,
                               normalization_error(spec.mean, spec.std, model.normalize_in_graph),
                               model.normalize_in_graph)
        write_labels(os.path.join(staging, config.labels_path), model.labels, model.file)
        write_text(os.path.join(staging, config.path), config_text(model, config, unique_id,
                                                                   (measured or {}).get(model.file)))
        written.append(config)
    return written


def write_labels(path: str, labels: Sequence[str], source: str) -> None:
    """One line: a classifier's label file has a line per output layer, its classes separated by ';' (a ';' in a
    name becomes ','). Read back as nvinfer splits it before it is kept, like every labels file of the bundle."""
    names = [name.replace(LABEL_SEPARATOR, ",") for name in check_label_names(labels, source)]
    write_text(path, LABEL_SEPARATOR.join(names) + "\n")
    lines = read_text_lines(path, "labels file")
    check_read_back(path, names, lines[0].split(LABEL_SEPARATOR) if len(lines) == 1 else lines)


def config_text(model, config: NvinferConfig, unique_id: int, measured=None) -> str:
    spec = model.preprocess
    channels, height, width = model.image_shape
    geometry = measured["applied"] if measured else STRETCH
    paragraphs = [
        "Gst-nvinfer config for {}: a primary classifier (whole frames), written by eca-deploy bundle from the "
        "model's metadata. Paths are relative to this file. The engine is the one build_engines.sh builds; without "
        "it nvinfer builds its own from onnx-file.".format(model.file),
        _geometry_comment(model, width, height, geometry, measured),
        _normalization_comment(model, config.error),
        "Output {!r} is logits (the graph has no softmax): nvinfer's default classifier parser reports the top "
        "class when its value exceeds both classifier-threshold and 0, so the threshold is on logits, not "
        "probabilities.".format(model.output.name),
    ]
    properties = [
        ("gpu-id", 0), ("gie-unique-id", unique_id), ("network-type", 1), ("process-mode", 1),
        ("onnx-file", "../" + model.file), ("model-engine-file", "../" + model.engine),
        ("network-mode", NETWORK_MODES[model.precision]), ("batch-size", model.max_batch),
        ("infer-dims", "{};{};{}".format(channels, height, width)), ("model-color-format", 0),
        ("net-scale-factor", repr(config.net_scale_factor)),
        ("offsets", ";".join(repr(value) for value in config.offsets)),
    ]
    properties.append(("scaling-filter", scaling_filter(spec.interpolation)))
    properties += list(GEOMETRY_PROPERTIES[geometry])
    properties += [("labelfile-path", os.path.basename(config.labels_path)), ("output-blob-names", model.output.name),
                   ("classifier-threshold", repr(CLASSIFIER_THRESHOLD))]
    lines = [keyfile_comment(line) for paragraph in paragraphs for line in textwrap.wrap(paragraph, COMMENT_WIDTH)]
    lines.append("[property]")
    # every value through the one key-file writer: a name can never end its line and add a key
    lines += [keyfile_line(key, value, list_item=key in LIST_KEYS) for key, value in properties]
    return "\n".join(lines) + "\n"


def _geometry_comment(model, width: int, height: int, geometry: str, measured) -> str:
    """What nvinfer does to a frame under this config, and how much that agreed with the model's own
    preprocessing on the bundle's reference images."""
    spec = model.preprocess
    own = ("the whole image stretched to {0}x{0}".format(spec.input_size) if spec.geometry == "stretch" else
           "a resize of the shorter side to {} and a {}x{} center crop".format(spec.resize_size, spec.crop_size,
                                                                               spec.crop_size))
    text = "Resize: nvinfer gives the network {} ({}x{}); the model was checked on {}.".format(
        GEOMETRY_WORDS[geometry], width, height, own)
    if measured:
        text += (" Emulated on the bundle's reference images with this config's scaling-filter and normalization, "
                 "its top-1 agreed {} with the model's own preprocessing; this config applies {}, which measured "
                 "best.".format(", ".join("{} {:.2f}%".format(g, float(measured[g])) for g in GEOMETRIES),
                                geometry))
    else:
        text += " Not measured (the bundle carries no reference images)."
    if spec.geometry != "stretch":
        text += (" For inputs the proof covers exactly, export with `cli.py export --geometry stretch` (the model "
                 "then expects the whole frame stretched, as nvinfer feeds it), or crop a region upstream (e.g. "
                 "nvdspreprocess ROIs), or run this as a secondary classifier on a detector's objects.")
    return text


def _normalization_comment(model, error: NormalizationError) -> str:
    spec = model.preprocess
    if model.normalize_in_graph:
        return ("Normalization: inside the model (exported with --normalize-in-graph), so nvinfer passes RGB pixels "
                "0-255 unchanged (net-scale-factor=1, offsets 0): exact.")
    if error.exact:
        return ("Normalization: the model's std {} is the same on every channel, so net-scale-factor and offsets "
                "are exact.".format(_triple(spec.std)))
    return ("Normalization: nvinfer computes net-scale-factor * (x - offsets[c]) with one scale for all channels. "
            "The model's std {} differs per channel, so the scale is 1/(255 x mean std) and the offsets are "
            "255 x mean. Against the exact (x/255 - mean_c)/std_c over pixels 0-255: {}. For exact inputs, export "
            "with `eca-deploy export --normalize-in-graph` and bundle that model.".format(_triple(spec.std),
                                                                                     describe_error(error)))


def _triple(values: Sequence[float]) -> str:
    return "(" + ", ".join("{:g}".format(v) for v in values) + ")"
