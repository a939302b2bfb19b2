"""ONNX Runtime runner for the CPU, CUDA and TensorRT execution providers.

ONNX Runtime lists the CUDA and TensorRT providers even where they cannot start, and then falls back to the
CPU with only a log line. This runner therefore reports ``session.get_providers()``, what really runs, and
``require_requested=True`` turns a silent fallback into an error.
"""
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import MissingDependencyError, UserError
from .base import BaseRunner, TensorMeta

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


# Session config key of ONNX Runtime's thread spinning (onnxruntime_session_options_config_keys.h).
SPINNING_ENTRY = "session.intra_op.allow_spinning"


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("onnxruntime", "run ONNX models", "pip install onnxruntime") from None
    return onnxruntime


def resolve_providers(providers: Sequence[str]):
    return [PROVIDER_ALIASES.get(p.lower(), p) for p in providers]


# -- the one place ONNX Runtime's own errors become one line ------------------------------------------------------

def ort_errors(ort=None) -> Tuple[type, ...]:
    """What ONNX Runtime raises for a model it cannot load or run: its pybind exception types (Fail,
    InvalidArgument, InvalidGraph, RuntimeException, ...; none derives from a Python error type), plus
    RuntimeError and MemoryError, which it raises for a failed allocation. A programming error (TypeError,
    KeyError) is not among them and still shows its traceback."""
    found = [RuntimeError, MemoryError]
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state
        found += [kind for kind in vars(state).values() if isinstance(kind, type) and issubclass(kind, Exception)]
    except ImportError:  # a build without the pybind module: its errors are RuntimeErrors
        pass
    return tuple(found)


def _ort_reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def create_session(model, options=None, providers: Sequence[str] = ("CPUExecutionProvider",), name=None):
    """``ort.InferenceSession`` of a path or serialized ModelProto; a model ONNX Runtime refuses (a cycle, an op
    it lacks, an initializer it cannot allocate) is a UserError naming ``name`` (default: the path)."""
    ort = import_onnxruntime()
    label = name or (os.fspath(model) if isinstance(model, (str, os.PathLike)) else "the model")
    if isinstance(model, (str, os.PathLike)):
        from ..validate import check_onnx_file
        check_onnx_file(model)  # capped before ONNX Runtime reads it whole
    try:
        return ort.InferenceSession(model, options, providers=list(providers))
    except ort_errors() as exc:
        raise UserError("ONNX Runtime cannot load {}: {}".format(label, _ort_reason(exc))) from None


def run_session(session, names, feeds, name: str):
    """``session.run``; what ONNX Runtime raises while running (a Gather index out of range, a batch of 0, a
    shape the graph cannot take) is a UserError naming the model ``name``."""
    try:
        return session.run(names, feeds)
    except ort_errors() as exc:
        raise UserError("ONNX Runtime failed to run {}: {}".format(name, _ort_reason(exc))) from None


class OnnxRuntimeRunner(BaseRunner):
    backend = "onnxruntime"

    def __init__(
        self,
        model_path,
        providers: Sequence[str] = ("cpu",),
        threads: Optional[int] = None,
        graph_optimization_level: str = "all",
        enable_mem_arena: bool = True,
        optimized_model_path: Optional[str] = None,
        require_requested: bool = False,
        name: Optional[str] = None,
        allow_spinning: bool = False,
    ):
        super().__init__(name or os.path.basename(os.fspath(model_path)))
        self.model_path = os.fspath(model_path)
        # how ONNX Runtime's errors name the model: the path, or the name given for a temporary copy
        self.label = name or self.model_path
        self.requested_providers = resolve_providers(providers)
        self.threads = threads
        self.graph_optimization_level = graph_optimization_level
        self.enable_mem_arena = enable_mem_arena
        self.optimized_model_path = optimized_model_path
        self.require_requested = require_requested
        self.allow_spinning = allow_spinning
        self.session = None

    def session_options(self):
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        options.graph_optimization_level = levels[self.graph_optimization_level]
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = self.enable_mem_arena
        # ORT's intra-op threads spin-wait after each run by default; while PyTorch (or another session) is timed
        # next, they take its cores (measured: PyTorch 4.8x slower in turns with a spinning session on 2 cores).
        # Off, ORT alone was no slower, faster on a loaded machine (docs/PERFORMANCE.md, "An honest PyTorch baseline").
        options.add_session_config_entry(SPINNING_ENTRY, "1" if self.allow_spinning else "0")
        options.log_severity_level = 3  # the provider fallback is reported through describe(), not the log
        if self.optimized_model_path:
            options.optimized_model_filepath = self.optimized_model_path
        return options

    def activate_impl(self) -> None:
        ort = import_onnxruntime()
        if not os.path.isfile(self.model_path):
            raise UserError("no such model file: {}".format(self.model_path))
        unknown = [p for p in self.requested_providers if p not in ort.get_all_providers()]
        if unknown:
            raise UserError("unknown ONNX Runtime provider {}; use {} or a full name such as {}".format(
                ", ".join(unknown), ", ".join(sorted(PROVIDER_ALIASES)), "CUDAExecutionProvider"))
        available = ort.get_available_providers()
        providers = [p for p in self.requested_providers if p in available] or ["CPUExecutionProvider"]
        self.session = create_session(self.model_path, self.session_options(), providers, self.label)
        fell_back = self.missing_providers
        if fell_back and self.require_requested:
            raise UserError("ONNX Runtime could not start {} for {}; running providers: {}".format(
                ", ".join(fell_back), self.model_path, ", ".join(self.session.get_providers())))

    def deactivate_impl(self) -> None:
        self.session = None

    @property
    def missing_providers(self):
        """Requested providers that are not running (not in this build, or they failed to start)."""
        return [p for p in self.requested_providers if p not in self.active_providers]

    @property
    def active_providers(self):
        return list(self.session.get_providers()) if self.session is not None else []

    def _meta(self, nodes) -> Dict[str, TensorMeta]:
        return {node.name: TensorMeta(tuple(node.shape), np.dtype(_ORT_DTYPES.get(node.type, np.float32)))
                for node in nodes}

    def get_input_metadata(self) -> Dict[str, TensorMeta]:
        return self._meta(self.session.get_inputs())

    def get_output_metadata(self) -> Dict[str, TensorMeta]:
        return self._meta(self.session.get_outputs())

    def infer_impl(self, feed_dict):
        names = [node.name for node in self.session.get_outputs()]
        values = run_session(self.session, names, feed_dict, self.label)
        return dict(zip(names, values))

    def describe(self):
        info = super().describe()
        info.update({
            "model": self.model_path,
            "requested_providers": self.requested_providers,
            "providers": self.active_providers,
            "threads": self.threads,
            "graph_optimization_level": self.graph_optimization_level,
            "enable_mem_arena": self.enable_mem_arena,
            "allow_spinning": self.allow_spinning,
        })
        return info
