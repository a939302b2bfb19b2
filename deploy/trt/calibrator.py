"""Implicit INT8 from a calibration cache (TensorRT 8.5-10.x; removed in 11): the version check Polygraphy lacks.

TensorRT skips a cache it finds incompatible *without an error* (TensorRT issues 1378 and 3612) and then builds
every INT8 layer with "default quantization params". So the cache is checked before the build (its header must
name the running TensorRT and a calibrator TensorRT pairs with it), during the build (Polygraphy's ``Calibrator``
replays the cache; if TensorRT asks it for data, TensorRT rejected the cache), and after it (the build checks that
INT8 layers exist).
"""
import os
import tempfile
from dataclasses import dataclass
from typing import Dict

from ..errors import UserError
from .version import TrtVersion

# Header algorithm -> the calibrator base class TensorRT pairs it with (it compares getAlgorithm() with the header).
CALIBRATOR_CLASSES: Dict[str, str] = {
    "EntropyCalibration2": "IInt8EntropyCalibrator2",
    "EntropyCalibration": "IInt8EntropyCalibrator",
    "MinMaxCalibration": "IInt8MinMaxCalibrator",
}


@dataclass(frozen=True)
class CacheCheck:
    path: str
    version: str
    algorithm: str
    tensors: int
    data: bytes

    def to_dict(self) -> Dict[str, object]:
        return {"path": self.path, "version": self.version, "algorithm": self.algorithm, "tensors": self.tensors}


def check_calibration_cache(path, running: TrtVersion) -> CacheCheck:
    """Refuse, before building, a cache that this TensorRT would ignore silently."""
    from ..calib_cache import read_calibration_cache

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError("no such calibration cache: {}".format(path))
    cache = read_calibration_cache(path)
    stamped = TrtVersion.from_cache_number(cache.trt_version)
    if cache.trt_version != running.cache_number:
        raise UserError(
            "calibration cache {} was written for TensorRT {} (header TRT-{}-...) but the build is for TensorRT {}, "
            "which expects TRT-{}-...; TensorRT would skip it without an error and build INT8 layers with default "
            "quantization params. Recalibrate with `eca-deploy calibrate --trt-version {}`, or build the Q/DQ ONNX "
            "model instead".format(path, stamped, cache.trt_version, running, running.cache_number, running))
    if cache.algorithm not in CALIBRATOR_CLASSES:
        raise UserError("calibration cache {} uses algorithm {!r}; supported: {}".format(
            path, cache.algorithm, ", ".join(sorted(CALIBRATOR_CLASSES))))
    if not cache.scales:
        raise UserError("calibration cache {} holds no tensor scales".format(path))
    with open(path, "rb") as handle:
        return CacheCheck(path, str(stamped), cache.algorithm, len(cache.scales), handle.read())


class NoCalibrationData:
    """The calibrator's data loader: it has no data, and counts TensorRT's requests (a rejected cache)."""

    def __init__(self):
        self.requests = 0

    def __iter__(self):
        return self

    def __next__(self):
        self.requests += 1
        raise StopIteration


def make_cache_calibrator(trt, check: CacheCheck):
    """(Polygraphy Calibrator replaying the cache, its data loader); the user's cache file is never rewritten."""
    from polygraphy.backend.trt import Calibrator

    # A temporary copy: Polygraphy needs a real file (it stats it), and TensorRT writes the cache back to it.
    copy = tempfile.TemporaryFile("w+b")
    copy.write(check.data)
    copy.flush()
    probe = NoCalibrationData()
    calibrator = Calibrator(probe, cache=copy,
                            BaseClass=getattr(trt, CALIBRATOR_CLASSES[check.algorithm]))
    return calibrator, probe
