"""The one place that knows how TensorRT's Python API differs between 8.5/8.6 (JetPack 5), 10.x (JetPack 6), 11.x.

Every version-dependent call goes through ``TrtCompat``; no other module branches on ``trt.__version__``.
A feature is used only where the running version lies in its documented range *and* the attribute exists, so an
unusual build fails with a one-line message naming the version it needs instead of an AttributeError.

Sources for the ranges: TensorRT's Python API references (8.5.3, 8.6.1, 10.x, 11.x), "Migrating from TensorRT 8.x
to 10.x" and "Migrating from TensorRT 10.x to 11.x / Removed Python APIs and Replacements".
"""
import re
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ..errors import MissingDependencyError, UserError

# The named I/O tensor API (num_io_tensors, set_input_shape, set_tensor_address, execute_async_v3) starts at 8.5;
# the runner uses nothing older, so one code path serves JetPack 5, JetPack 6 and desktop TensorRT 10/11.
MIN_VERSION = (8, 5)


class TrtVersion(NamedTuple):
    major: int
    minor: int
    patch: int = 0
    build: Optional[int] = None

    @classmethod
    def parse(cls, text: str) -> "TrtVersion":
        match = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(text))
        if not match:
            raise UserError("cannot read a TensorRT version from {!r}".format(text))
        major, minor, patch, build = match.groups()
        return cls(int(major), int(minor), int(patch or 0), int(build) if build is not None else None)

    @property
    def release(self) -> Tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __str__(self) -> str:
        parts = [self.major, self.minor, self.patch] + ([self.build] if self.build is not None else [])
        return ".".join(str(part) for part in parts)

    def same_release(self, other: "TrtVersion") -> bool:
        """Equal as far as both are known: "10.3.0" (pip) matches "10.3.0.30" (JetPack)."""
        if self.release != other.release:
            return False
        return self.build is None or other.build is None or self.build == other.build


def calibration_version_int(version: TrtVersion) -> int:
    """The number in a calibration cache header ``TRT-<n>-<algorithm>`` that this TensorRT writes and accepts.

    TensorRT 8 encodes NV_TENSORRT_VERSION as major*1000 + minor*100 + patch (8.6.1 -> 8601); TensorRT 10 changed
    the macro to major*10000 + minor*100 + patch (10.3.0 -> 100300, as in caches written by 10.3).
    """
    if version.major >= 10:
        return version.major * 10000 + version.minor * 100 + version.patch
    return version.major * 1000 + version.minor * 100 + version.patch


def describe_calibration_version(number: int) -> str:
    """8601 -> "8.6.1", 100300 -> "10.3.0" (the inverse of calibration_version_int)."""
    if number >= 100000:
        return "{}.{}.{}".format(number // 10000, number // 100 % 100, number % 100)
    return "{}.{}.{}".format(number // 1000, number // 100 % 10, number % 100)


@dataclass(frozen=True)
class Feature:
    """A version-dependent part of the API: available from ``since`` up to (not including) ``until``."""

    description: str
    since: Tuple[int, int]
    until: Optional[Tuple[int, int]] = None
    probe: Optional[Callable] = None  # trt module -> bool, for builds that lack what their version should have
    hint: str = ""


def _has(*path) -> Callable:
    def probe(trt) -> bool:
        obj = trt
        for name in path:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return probe


FEATURES: Dict[str, Feature] = {
    "named_io": Feature("the named I/O tensor API (execute_async_v3)", (8, 5),
                        probe=_has("IExecutionContext", "execute_async_v3")),
    "explicit_batch_flag": Feature("NetworkDefinitionCreationFlag.EXPLICIT_BATCH", (8, 0), (10, 0),
                                   probe=_has("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH")),
    "strongly_typed": Feature("strongly typed networks", (10, 0),
                              probe=_has("NetworkDefinitionCreationFlag", "STRONGLY_TYPED")),
    "weak_precision_flags": Feature("the FP16/INT8 builder flags", (8, 0), (11, 0),
                                    probe=_has("BuilderFlag", "FP16"),
                                    hint="export an FP16 or Q/DQ ONNX model; its precision is built as it is"),
    "implicit_int8": Feature("implicit INT8 from a calibration cache (--calib-cache)", (8, 0), (11, 0),
                             probe=lambda trt: _has("IInt8EntropyCalibrator2")(trt)
                             and _has("IBuilderConfig", "int8_calibrator")(trt),
                             hint="build the Q/DQ (explicit INT8) ONNX model instead"),
    "calibration_profile": Feature("IBuilderConfig.set_calibration_profile", (8, 0), (11, 0),
                                   probe=_has("IBuilderConfig", "set_calibration_profile")),
    "version_compatible": Feature("--version-compatible", (8, 6), probe=_has("BuilderFlag", "VERSION_COMPATIBLE")),
    "hardware_compatible": Feature("--hardware-compatible", (8, 6),
                                   probe=_has("HardwareCompatibilityLevel", "AMPERE_PLUS")),
    "opt_level": Feature("--opt-level (builder optimization level)", (8, 6),
                         probe=_has("IBuilderConfig", "builder_optimization_level")),
    "dla": Feature("DLA (--dla-core)", (8, 0), (11, 0), probe=_has("DeviceType", "DLA"),
                   hint="DLA is a Jetson/DRIVE feature of TensorRT 8.x and 10.x (JetPack)"),
}


def feature_available(name: str, version: TrtVersion, trt=None) -> bool:
    feature = FEATURES[name]
    if version.release[:2] < feature.since:
        return False
    if feature.until is not None and version.release[:2] >= feature.until:
        return False
    return trt is None or feature.probe is None or bool(feature.probe(trt))


def feature_error(name: str, version: TrtVersion) -> UserError:
    feature = FEATURES[name]
    if version.release[:2] < feature.since:
        message = "{} needs TensorRT {}.{} or newer; this is TensorRT {}".format(
            feature.description, feature.since[0], feature.since[1], version)
    elif feature.until is not None and version.release[:2] >= feature.until:
        message = "{} was removed in TensorRT {}.{}; this is TensorRT {}".format(
            feature.description, feature.until[0], feature.until[1], version)
    else:
        message = "{} is missing from this TensorRT {} build".format(feature.description, version)
    if feature.hint:
        message += " ({})".format(feature.hint)
    return UserError(message)


# -- importing TensorRT ----------------------------------------------------------------------------------------

def install_hint() -> str:
    from ..jetson import is_jetson
    if is_jetson():
        return ("on Jetson TensorRT ships with JetPack: do not pip install it; `sudo apt install python3-libnvinfer`, "
                "and create virtualenvs with --system-site-packages")
    return "pip install tensorrt cuda-python (on Jetson it ships with JetPack instead: do not pip install it)"


def import_tensorrt(purpose: str = "build or run TensorRT engines"):
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingDependencyError("TensorRT's Python package (tensorrt)", purpose, install_hint()) from None
    version = TrtVersion.parse(trt.__version__)
    if version.release[:2] < MIN_VERSION:
        raise UserError("TensorRT {} is too old: this tool needs {}.{} or newer (named I/O tensors)".format(
            version, *MIN_VERSION))
    return trt


def tensorrt_available() -> bool:
    """Whether ``import tensorrt`` can work here, without importing it (it is slow)."""
    import importlib.util
    try:
        return importlib.util.find_spec("tensorrt") is not None
    except (ImportError, ValueError):
        return False


# -- the version-dependent calls --------------------------------------------------------------------------------

class IOTensor(NamedTuple):
    name: str
    is_input: bool
    shape: Tuple[int, ...]  # -1 for dynamic axes, as TensorRT reports them
    dtype: np.dtype


class ParserIssue(NamedTuple):
    description: str
    node_index: int
    node_name: str
    operator: str

    def __str__(self) -> str:
        where = []
        if self.node_name:
            where.append("node {!r}".format(self.node_name))
        elif self.node_index >= 0:
            where.append("node #{}".format(self.node_index))
        if self.operator:
            where.append("({})".format(self.operator))
        return "{}: {}".format(" ".join(where), self.description) if where else self.description


class TrtCompat:
    """Version dispatch over a real ``tensorrt`` module, or over a bare version (planning without TensorRT)."""

    def __init__(self, trt=None, version: Optional[str] = None):
        if trt is None and version is None:
            raise ValueError("give the tensorrt module or a version")
        self.trt = trt
        self.version = TrtVersion.parse(version if version is not None else trt.__version__)

    @classmethod
    def for_version(cls, version: str) -> "TrtCompat":
        return cls(version=version)

    @property
    def version_string(self) -> str:
        return str(self.trt.__version__) if self.trt is not None else str(self.version)

    def has(self, feature: str) -> bool:
        return feature_available(feature, self.version, self.trt)

    def require(self, feature: str) -> None:
        if not self.has(feature):
            raise feature_error(feature, self.version)

    @property
    def strong_typing_always_on(self) -> bool:
        # 11.x removed weak typing: every network is strongly typed and STRONGLY_TYPED is accepted but ignored.
        return self.version.major >= 11

    # -- building ----------------------------------------------------------------------------------------------
    def network_flags(self, strongly_typed: bool) -> int:
        trt, flags = self.trt, 0
        if self.has("explicit_batch_flag"):  # required on 8.x; deprecated and ignored from 10.0 on
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        if strongly_typed:
            if self.has("strongly_typed"):
                flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
            elif not self.strong_typing_always_on:
                raise feature_error("strongly_typed", self.version)
        return flags

    def parser_issues(self, parser) -> List[ParserIssue]:
        issues = []
        for index in range(parser.num_errors):
            error = parser.get_error(index)
            # node_name()/node_operator() exist from 10.0; 8.x only knows the node's index.
            name = error.node_name() if hasattr(error, "node_name") else ""
            operator = error.node_operator() if hasattr(error, "node_operator") else ""
            issues.append(ParserIssue(str(error.desc()), int(error.node()), name or "", operator or ""))
        return issues

    def set_builder_flag(self, config, name: str) -> None:
        config.set_flag(getattr(self.trt.BuilderFlag, name))

    def set_workspace(self, config, nbytes: int) -> None:
        # set_memory_pool_limit exists from 8.3; max_workspace_size (8.x) is gone in 10.
        config.set_memory_pool_limit(self.trt.MemoryPoolType.WORKSPACE, int(nbytes))

    def set_opt_level(self, config, level: int) -> None:
        self.require("opt_level")
        config.builder_optimization_level = int(level)

    def set_hardware_compatible(self, config) -> None:
        self.require("hardware_compatible")
        config.hardware_compatibility_level = self.trt.HardwareCompatibilityLevel.AMPERE_PLUS

    def set_dla(self, config, core: int, gpu_fallback: bool) -> None:
        self.require("dla")
        config.default_device_type = self.trt.DeviceType.DLA
        config.DLA_core = int(core)
        if gpu_fallback:
            self.set_builder_flag(config, "GPU_FALLBACK")

    def set_detailed_profiling(self, config) -> None:
        # DETAILED keeps layer names and per-tensor formats in the plan, so the engine inspector can report them.
        if hasattr(self.trt, "ProfilingVerbosity") and hasattr(config, "profiling_verbosity"):
            config.profiling_verbosity = self.trt.ProfilingVerbosity.DETAILED

    def set_calibrator(self, config, calibrator, profile=None) -> None:
        self.require("implicit_int8")
        config.int8_calibrator = calibrator
        if profile is not None and self.has("calibration_profile"):
            config.set_calibration_profile(profile)

    def set_timing_cache(self, config, data: bytes) -> bool:
        """Attach a timing cache; False when TensorRT rejects ``data`` (another device or version)."""
        cache = config.create_timing_cache(data)
        accepted = bool(config.set_timing_cache(cache, False))
        if not accepted:
            config.set_timing_cache(config.create_timing_cache(b""), False)
        return accepted

    def serialized_timing_cache(self, config) -> Optional[bytes]:
        cache = config.get_timing_cache()
        return bytes(cache.serialize()) if cache is not None else None

    # -- running -----------------------------------------------------------------------------------------------
    def allow_engine_host_code(self, runtime) -> None:
        # Version-compatible plans embed a lean runtime (host code) that the runtime must be told to trust (8.6+).
        if hasattr(runtime, "engine_host_code_allowed"):
            runtime.engine_host_code_allowed = True

    def nptype(self, trt_dtype) -> np.dtype:
        return np.dtype(self.trt.nptype(trt_dtype))

    def io_tensors(self, engine) -> List[IOTensor]:
        tensors = []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            is_input = engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT
            shape = tuple(int(dim) for dim in engine.get_tensor_shape(name))
            tensors.append(IOTensor(name, is_input, shape, self.nptype(engine.get_tensor_dtype(name))))
        return tensors

    def profile_shape(self, engine, name: str, profile_index: int = 0):
        """(min, opt, max) shapes of an input in one optimization profile."""
        if hasattr(engine, "get_tensor_profile_shape"):  # the only form from 10.0 on
            shapes = engine.get_tensor_profile_shape(name, profile_index)
        else:  # 8.x: (profile index, binding name or index)
            shapes = engine.get_profile_shape(profile_index, name)
        return tuple(tuple(int(dim) for dim in shape) for shape in shapes)

    def set_input_shape(self, context, name: str, shape) -> bool:
        return bool(context.set_input_shape(name, tuple(int(dim) for dim in shape)))

    def output_shape(self, context, name: str) -> Tuple[int, ...]:
        return tuple(int(dim) for dim in context.get_tensor_shape(name))

    def set_tensor_address(self, context, name: str, pointer: int) -> None:
        context.set_tensor_address(name, int(pointer))

    def execute(self, context, stream_handle: int) -> bool:
        return bool(context.execute_async_v3(int(stream_handle)))

    def engine_information(self, engine, context=None) -> Optional[str]:
        """The engine inspector's JSON (layers with their tensor formats), or None where unavailable."""
        if not hasattr(engine, "create_engine_inspector"):
            return None
        inspector = engine.create_engine_inspector()
        if context is not None:
            # With dynamic shapes the inspector reports formats only for a context whose shapes are set.
            inspector.execution_context = context
        return inspector.get_engine_information(self.trt.LayerInformationFormat.JSON)


# -- logging ----------------------------------------------------------------------------------------------------

# Phrases TensorRT logs when it builds INT8 layers without scales (TensorRT issues 1378/3612: a cache it
# finds incompatible is skipped without an error, and every tensor gets "default quantization params").
MISSING_SCALE_PHRASES = ("default quantization params", "Missing scale and zero-point", "missing dynamic range")


def make_logger(trt, echo_severity: str = "WARNING", stream=None):
    """A trt.ILogger that echoes warnings and errors to stderr and keeps what the checks after a build need."""

    echo_limit = int(getattr(trt.ILogger.Severity, echo_severity))
    error_limit = int(trt.ILogger.Severity.ERROR)
    out = stream or sys.stderr

    class CapturingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: List[str] = []
            self.missing_scales: List[str] = []

        def log(self, severity, msg):
            # log() is noexcept on the C++ side: an exception here would abort the process.
            try:
                level = int(severity)
                if level <= error_limit:
                    self.errors.append(msg)
                if any(phrase.lower() in msg.lower() for phrase in MISSING_SCALE_PHRASES):
                    self.missing_scales.append(msg)
                if level <= echo_limit:
                    out.write("[TensorRT] {}\n".format(msg))
            except Exception:  # noqa: BLE001
                pass

    return CapturingLogger()
