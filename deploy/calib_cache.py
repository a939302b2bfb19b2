"""TensorRT's calibration cache: the text file that implicit INT8 (TensorRT 8.x-10.x) reads instead of calibrating.

Format (what TensorRT writes and reads; ONNX Runtime's ``ReadDynamicRange`` and ModelOpt parse the same)::

    TRT-<version int>-<algorithm>
    <tensor name>: <8 hex digits: big-endian IEEE-754 float32 of scale = amax / 127>

TensorRT silently ignores a cache whose header names another version, and rejects one whose algorithm differs
from the calibrator's (``getAlgorithm()``), so the builder must stamp the version it runs and use the
calibrator class that ``CalibrationCache.algorithm`` names. Torch-free and onnx-free: this runs on a Jetson.
"""
import os
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Mapping, Union

from .errors import UserError
from .filekind import file_kind, is_regular_file
from .fileio import write_text
from .names import unsafe_character
from .trt.version import TrtVersion, parse_version_or_number

# TensorRT's CalibrationAlgoType names, as they appear in the header.
ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
DEFAULT_ALGORITHM = "EntropyCalibration2"
# A cache is one line per tensor (about 40 bytes): 16 MiB is 400,000 tensors, far above any classifier.
MAX_CACHE_BYTES = 16 << 20

_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
_ENTRY = re.compile(r"^(.+): ([0-9a-fA-F]{8})$")


@dataclass(frozen=True)
class CalibrationCache:
    trt_version: int
    algorithm: str
    scales: Dict[str, float]  # tensor name -> scale (amax / 127), in file order

    def amax(self, name: str) -> float:
        return self.scales[name] * 127.0


def parse_trt_version(version: Union[str, int]) -> int:
    """TensorRT's cache header number for a version: '8.6' -> 8600, '8.6.1' -> 8601, '10.3.0' -> 100300.

    The encoding lives in ``deploy.trt.version`` (the one codec); an integer of 1000 or more is taken as encoded.
    """
    return parse_version_or_number(version).cache_number


def format_trt_version(number: int) -> str:
    """The inverse of parse_trt_version: 8601 -> '8.6.1', 100300 -> '10.3.0'."""
    return str(TrtVersion.from_cache_number(number))


def encode_scale(scale: float) -> str:
    return struct.pack(">f", float(scale)).hex()


def decode_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text))[0]


def format_calibration_cache(scales: Mapping[str, float], trt_version: Union[str, int],
                             algorithm: str = DEFAULT_ALGORITHM) -> str:
    if algorithm not in ALGORITHMS:
        raise UserError("unknown calibration algorithm {!r}; TensorRT knows {}".format(
            algorithm, ", ".join(ALGORITHMS)))
    lines = ["TRT-{}-{}".format(parse_trt_version(trt_version), algorithm)]
    for name, scale in scales.items():
        if unsafe_character(name) is not None or not name:  # one line each, as TensorRT and our reader split it
            raise UserError("tensor name {!r} cannot be written to a calibration cache".format(name))
        if not 0.0 < scale < float("inf"):  # also refuses NaN
            raise UserError("scale of {} must be a positive finite number, got {}".format(name, scale))
        lines.append("{}: {}".format(name, encode_scale(scale)))
    return "\n".join(lines) + "\n"


def parse_calibration_cache(text: str, source: str = "calibration cache") -> CalibrationCache:
    lines = text.splitlines()
    header = _HEADER.match(lines[0].strip()) if lines else None
    if header is None:
        raise UserError("{} does not start with a TensorRT header like TRT-8601-EntropyCalibration2".format(source))
    scales = OrderedDict()
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        # Tensor names may themselves hold ': ' (TensorFlow-style 'conv1/convolution:0'), so match the last one.
        entry = _ENTRY.match(line.rstrip("\r\n"))
        if entry is None:
            raise UserError("{} line {}: expected '<tensor>: <8 hex digits>', got {!r}".format(source, number, line))
        scales[entry.group(1)] = decode_scale(entry.group(2))
    return CalibrationCache(int(header.group(1)), header.group(2), dict(scales))


def read_calibration_cache(path) -> CalibrationCache:
    if not is_regular_file(path):  # a FIFO would block open() until a writer came
        raise UserError("cannot read calibration cache {}: it is {}".format(path, file_kind(path)))
    try:
        if os.path.getsize(path) > MAX_CACHE_BYTES:  # checked before reading, like every file the tool takes
            raise UserError("cannot read calibration cache {}: it is larger than {} MiB (a cache holds one short line "
                            "per tensor); it is damaged or another file".format(path, MAX_CACHE_BYTES >> 20))
        with open(path, "r", encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError("cannot read calibration cache {}: {}".format(path, exc)) from None
    return parse_calibration_cache(text, source=str(path))


def write_calibration_cache(path, scales: Mapping[str, float], trt_version: Union[str, int],
                            algorithm: str = DEFAULT_ALGORITHM) -> str:
    """Write ``scales`` (tensor -> amax / 127, in the order given) atomically; return the path."""
    write_text(path, format_calibration_cache(scales, trt_version, algorithm))
    return str(path)
