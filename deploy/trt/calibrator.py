"""Implicit INT8 from a calibration cache: the legacy path for TensorRT 8.x and 10.x (removed in 11).

TensorRT skips a cache it finds incompatible *without an error* (TensorRT issues 1378 and 3612) and then builds
every INT8 layer with "default quantization params". So the cache is checked three times:

1. before the build: its header must name the running TensorRT version and a calibrator this module offers,
   and its tensor names must match tensors of the parsed network;
2. during the build: if TensorRT asks the calibrator for batches, it has rejected the cache;
3. after the build: TensorRT's log must not mention missing scales, and the inspector must show INT8 layers.

The cache format is read by ``deploy.calib_cache`` (imported lazily; it is written by the calibration stage).
"""
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Tuple

from ..errors import UserError
from .compat import TrtVersion, calibration_version_int, describe_calibration_version

# Header algorithm -> the calibrator class TensorRT pairs it with (the legacy calibrator needs cutoffs and is not
# offered). TensorRT compares the header with its own version and the calibrator's algorithm.
CALIBRATOR_CLASSES: Dict[str, str] = {
    "EntropyCalibration2": "IInt8EntropyCalibrator2",
    "EntropyCalibration": "IInt8EntropyCalibrator",
    "MinMaxCalibration": "IInt8MinMaxCalibrator",
}


@dataclass(frozen=True)
class CacheCheck:
    path: str
    header_version: int
    algorithm: str
    tensor_names: Tuple[str, ...]
    data: bytes

    def to_dict(self) -> Dict[str, object]:
        return {"path": self.path, "header_version": self.header_version, "algorithm": self.algorithm,
                "tensors": len(self.tensor_names)}


def check_calibration_cache(path, running: TrtVersion) -> CacheCheck:
    """Refuse, before building, a cache that this TensorRT would ignore silently."""
    from .. import calib_cache

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError("no such calibration cache: {}".format(path))
    cache = calib_cache.read_calibration_cache(path)
    expected = calibration_version_int(running)
    header = "TRT-{}-{}".format(cache.trt_version, cache.algorithm)
    if int(cache.trt_version) != expected:
        raise UserError(
            "calibration cache {} was written for TensorRT {} (header {}) but this is TensorRT {}, which expects "
            "TRT-{}-...; TensorRT would skip it without an error and build INT8 layers with default quantization "
            "params. Write the cache again for TensorRT {} (the calibration stage stamps the target version into "
            "the header), or build the Q/DQ ONNX model instead".format(
                path, describe_calibration_version(int(cache.trt_version)), header, running, expected, running))
    if cache.algorithm not in CALIBRATOR_CLASSES:
        raise UserError("calibration cache {} uses algorithm {!r}; supported: {}".format(
            path, cache.algorithm, ", ".join(sorted(CALIBRATOR_CLASSES))))
    if not cache.scales:
        raise UserError("calibration cache {} holds no tensor scales".format(path))
    with open(path, "rb") as handle:
        data = handle.read()
    return CacheCheck(path, int(cache.trt_version), cache.algorithm, tuple(cache.scales), data)


def check_cache_covers_network(check: CacheCheck, network_tensors: Iterable[str]) -> List[str]:
    """Notes on how the cache's tensor names match the network's; UserError when none match at all."""
    network = set(network_tensors)
    cached = set(check.tensor_names)
    matched = cached & network
    if network and not matched:
        raise UserError("calibration cache {} names none of this network's tensors (was it calibrated on another "
                        "export of the model?)".format(check.path))
    notes = []
    if cached - network:
        notes.append("{} of {} tensors in {} are not in this network".format(
            len(cached - network), len(cached), os.path.basename(check.path)))
    return notes


def make_cache_calibrator(trt, check: CacheCheck):
    """A calibrator that only replays ``check``'s cache; it counts TensorRT's requests for data (rejection)."""
    base = getattr(trt, CALIBRATOR_CLASSES[check.algorithm])

    # Defined here so that importing this module never needs TensorRT (the base class comes from it).
    class CacheReplayCalibrator(base):
        def __init__(self):
            base.__init__(self)
            self.batches_requested = 0

        def get_batch_size(self):
            return 1  # explicit-batch networks ignore it

        def get_batch(self, names, *args):
            self.batches_requested += 1  # only called when TensorRT did not accept the cache
            return None

        def read_calibration_cache(self, *args):
            return check.data

        def write_calibration_cache(self, cache, *args):
            return None

    return CacheReplayCalibrator()
