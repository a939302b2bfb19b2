"""The CUDA calls ``polygraphy.cuda`` lacks: events, CUDA graphs and the device's name.

Polygraphy wraps libcudart with ctypes (memory, copies, streams) but has no events or graph calls (0.53.6). This
is our one CUDA binding: the same ctypes style, on the very library handle Polygraphy loaded, so both talk to one
CUDA runtime. Every symbol exists in CUDA 11.4 (JetPack 5) and later; the same calls passed on an H200 in the
ctypes backend this replaces (this module itself has not run on a GPU yet).
"""
import ctypes
from dataclasses import dataclass
from typing import Dict

from ..errors import MissingDependencyError, UserError

_CAPTURE_THREAD_LOCAL = 1  # cudaStreamCaptureModeThreadLocal
_ATTR_CC_MAJOR, _ATTR_CC_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor / Minor


class CudaError(UserError):
    """A failed CUDA call; a UserError, so the CLI reports it in one line (out of memory, no device, ...)."""


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    major: int
    minor: int

    @property
    def compute_capability(self) -> str:
        return "{}.{}".format(self.major, self.minor)

    def to_dict(self) -> Dict[str, object]:
        return {"name": self.name, "compute_capability": self.compute_capability}


def cudart():
    """The libcudart handle Polygraphy loaded; MissingDependencyError or UserError when there is none."""
    try:
        from polygraphy import cuda
        from polygraphy.exception import PolygraphyException
    except ImportError:
        raise MissingDependencyError("Polygraphy (polygraphy)", "use CUDA", "pip install polygraphy==0.53.6") from None
    try:
        lib = cuda.wrapper().handle
    except (PolygraphyException, OSError) as exc:
        raise UserError("no CUDA runtime (libcudart.so) could be loaded: {}".format(exc)) from None
    lib.cudaGetErrorString.restype, lib.cudaGetErrorString.argtypes = ctypes.c_char_p, [ctypes.c_int]
    return lib


def call(name: str, *args, out: bool = False) -> int:
    """``name(*args)``, raising CudaError on failure; with ``out``, the pointer it writes through its first argument."""
    lib, pointer = cudart(), ctypes.c_void_p()
    status = getattr(lib, name)(*((ctypes.byref(pointer),) if out else ()) + args)
    if status != 0:
        message = lib.cudaGetErrorString(int(status))
        raise CudaError("CUDA {} failed: {}".format(name, message.decode() if message else status))
    return int(pointer.value or 0)


def device_info() -> DeviceInfo:
    device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    call("cudaGetDevice", ctypes.byref(device))
    call("cudaDeviceGetAttribute", ctypes.byref(major), ctypes.c_int(_ATTR_CC_MAJOR), device)
    call("cudaDeviceGetAttribute", ctypes.byref(minor), ctypes.c_int(_ATTR_CC_MINOR), device)
    # cudaDeviceProp starts with char name[256] in every CUDA version; the buffer is larger than the struct.
    props, lib = ctypes.create_string_buffer(8192), cudart()
    get_props = getattr(lib, "cudaGetDeviceProperties_v2", None) or lib.cudaGetDeviceProperties
    name = props.value.decode("utf-8", "replace") if get_props(props, device) == 0 else "unknown GPU"
    return DeviceInfo(name, major.value, minor.value)


class Event:
    """A CUDA event; ``elapsed_ms(start, end)`` is the GPU time between two recorded events."""

    def __init__(self):
        self.ptr = call("cudaEventCreate", out=True)

    def record(self, stream_ptr: int) -> None:
        call("cudaEventRecord", ctypes.c_void_p(self.ptr), ctypes.c_void_p(stream_ptr))

    @staticmethod
    def elapsed_ms(start: "Event", end: "Event") -> float:
        call("cudaEventSynchronize", ctypes.c_void_p(end.ptr))
        milliseconds = ctypes.c_float()
        call("cudaEventElapsedTime", ctypes.byref(milliseconds), ctypes.c_void_p(start.ptr), ctypes.c_void_p(end.ptr))
        return float(milliseconds.value)

    def free(self) -> None:
        if self.ptr:
            call("cudaEventDestroy", ctypes.c_void_p(self.ptr))
        self.ptr = 0


class Graph:
    """The work ``work()`` enqueues on a stream, captured once, instantiated, and replayed with ``launch``."""

    def __init__(self, stream_ptr: int, work) -> None:
        call("cudaStreamBeginCapture", ctypes.c_void_p(stream_ptr), ctypes.c_int(_CAPTURE_THREAD_LOCAL))
        graph = ctypes.c_void_p()
        try:
            work()
        finally:  # end the capture even when the work fails, or the stream stays unusable
            call("cudaStreamEndCapture", ctypes.c_void_p(stream_ptr), ctypes.byref(graph))
        self.graph = int(graph.value or 0)
        # cudaGraphInstantiate changed its C signature in CUDA 12; ...WithFlags is the same in 11.4+ and 12.
        self.exec = call("cudaGraphInstantiateWithFlags", ctypes.c_void_p(self.graph), ctypes.c_ulonglong(0), out=True)

    def launch(self, stream_ptr: int) -> None:
        call("cudaGraphLaunch", ctypes.c_void_p(self.exec), ctypes.c_void_p(stream_ptr))

    def free(self) -> None:
        if self.exec:
            call("cudaGraphExecDestroy", ctypes.c_void_p(self.exec))
        if self.graph:
            call("cudaGraphDestroy", ctypes.c_void_p(self.graph))
        self.graph = self.exec = 0
