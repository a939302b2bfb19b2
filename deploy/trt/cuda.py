"""Device memory, streams, events and CUDA graphs through whichever CUDA binding is installed.

TensorRT's Python API takes raw device pointers and stream handles (ints) and allocates nothing for the caller.
Three bindings can provide them; ``load_cuda_backend`` tries them in this order:

1. cuda-python: ``cuda.bindings.runtime`` (cuda-python 12.6 and later) or ``cuda.cudart`` (earlier releases);
2. pycuda (``pycuda.driver``), common on JetPack 5 images; it has no CUDA graph support here;
3. ctypes on the CUDA runtime library ``libcudart.so``, which every CUDA and JetPack install has.

All three implement the small ``CudaBackend`` interface below, so the runner never branches on the binding.
Set ECA_DEPLOY_CUDA_BACKEND=cuda-python|pycuda|ctypes to force one.
"""
import ctypes
import ctypes.util
import glob
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from ..errors import MissingDependencyError, UserError

BACKEND_ENV = "ECA_DEPLOY_CUDA_BACKEND"
BACKEND_NAMES = ("cuda-python", "pycuda", "ctypes")

# cudaMemcpyKind and cudaStreamCaptureMode values from the CUDA runtime headers (used by the ctypes backend).
_HOST_TO_DEVICE, _DEVICE_TO_HOST = 1, 2
_CAPTURE_THREAD_LOCAL = 1
_ATTR_CC_MAJOR, _ATTR_CC_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor / Minor


class CudaError(UserError):
    """A failed CUDA call. A UserError so the CLI reports it in one line (out of memory, no device, ...)."""

    def __init__(self, call: str, message: str):
        super().__init__("CUDA {} failed: {}".format(call, message))
        self.call = call


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


def _host_view(pointer: int, nbytes: int) -> np.ndarray:
    return np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(int(pointer)))


class CudaBackend:
    """What the TensorRT runner needs from CUDA. Pointers and stream handles are plain ints."""

    name = "none"
    supports_graphs = True

    def malloc(self, nbytes: int) -> int:
        raise NotImplementedError

    def free(self, pointer: int) -> None:
        raise NotImplementedError

    def host_buffer(self, nbytes: int) -> np.ndarray:
        """A uint8 host buffer, page-locked where the binding can, so copies are truly asynchronous."""
        return np.empty(nbytes, dtype=np.uint8)

    def free_host_buffer(self, array: np.ndarray) -> None:
        pass

    def htod_async(self, device_pointer: int, host: np.ndarray, stream) -> None:
        raise NotImplementedError

    def dtoh_async(self, host: np.ndarray, device_pointer: int, stream) -> None:
        raise NotImplementedError

    def create_stream(self):
        raise NotImplementedError

    def stream_handle(self, stream) -> int:
        return int(stream)

    def synchronize(self, stream) -> None:
        raise NotImplementedError

    def destroy_stream(self, stream) -> None:
        raise NotImplementedError

    def create_event(self):
        raise NotImplementedError

    def record_event(self, event, stream) -> None:
        raise NotImplementedError

    def elapsed_ms(self, start, end) -> float:
        raise NotImplementedError

    def destroy_event(self, event) -> None:
        raise NotImplementedError

    def begin_capture(self, stream) -> None:
        raise UserError("CUDA graphs need cuda-python or libcudart.so; the {} binding has none here".format(self.name))

    def end_capture(self, stream):
        raise NotImplementedError

    def instantiate(self, graph):
        raise NotImplementedError

    def launch_graph(self, graph_exec, stream) -> None:
        raise NotImplementedError

    def destroy_graph(self, graph, graph_exec) -> None:
        raise NotImplementedError

    def device_info(self) -> DeviceInfo:
        raise NotImplementedError

    def close(self) -> None:
        pass


class CudaPythonBackend(CudaBackend):
    """NVIDIA's cuda-python: every call returns (error, results...)."""

    name = "cuda-python"

    def __init__(self, runtime):
        self.rt = runtime
        self._host_pointers: Dict[int, int] = {}

    def _check(self, call: str, result):
        if not isinstance(result, tuple):
            result = (result,)
        error, values = result[0], result[1:]
        if error != self.rt.cudaError_t.cudaSuccess:
            described = self.rt.cudaGetErrorString(error)
            text = described[1] if isinstance(described, tuple) else described
            raise CudaError(call, text.decode() if isinstance(text, bytes) else str(text))
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def malloc(self, nbytes):
        return int(self._check("cudaMalloc", self.rt.cudaMalloc(int(nbytes))))

    def free(self, pointer):
        self._check("cudaFree", self.rt.cudaFree(int(pointer)))

    def host_buffer(self, nbytes):
        pointer = int(self._check("cudaMallocHost", self.rt.cudaMallocHost(int(nbytes))))
        array = _host_view(pointer, nbytes)
        self._host_pointers[id(array)] = pointer
        return array

    def free_host_buffer(self, array):
        pointer = self._host_pointers.pop(id(array), None)
        if pointer is not None:
            self._check("cudaFreeHost", self.rt.cudaFreeHost(pointer))

    def htod_async(self, device_pointer, host, stream):
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check("cudaMemcpyAsync", self.rt.cudaMemcpyAsync(
            int(device_pointer), host.ctypes.data, host.nbytes, kind, stream))

    def dtoh_async(self, host, device_pointer, stream):
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check("cudaMemcpyAsync", self.rt.cudaMemcpyAsync(
            host.ctypes.data, int(device_pointer), host.nbytes, kind, stream))

    def create_stream(self):
        return self._check("cudaStreamCreate", self.rt.cudaStreamCreate())

    def synchronize(self, stream):
        self._check("cudaStreamSynchronize", self.rt.cudaStreamSynchronize(stream))

    def destroy_stream(self, stream):
        self._check("cudaStreamDestroy", self.rt.cudaStreamDestroy(stream))

    def create_event(self):
        return self._check("cudaEventCreate", self.rt.cudaEventCreate())

    def record_event(self, event, stream):
        self._check("cudaEventRecord", self.rt.cudaEventRecord(event, stream))

    def elapsed_ms(self, start, end):
        self._check("cudaEventSynchronize", self.rt.cudaEventSynchronize(end))
        return float(self._check("cudaEventElapsedTime", self.rt.cudaEventElapsedTime(start, end)))

    def destroy_event(self, event):
        self._check("cudaEventDestroy", self.rt.cudaEventDestroy(event))

    def begin_capture(self, stream):
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._check("cudaStreamBeginCapture", self.rt.cudaStreamBeginCapture(stream, mode))

    def end_capture(self, stream):
        return self._check("cudaStreamEndCapture", self.rt.cudaStreamEndCapture(stream))

    def instantiate(self, graph):
        try:  # cuda-python 12+: (graph, flags) -> (err, exec)
            result = self.rt.cudaGraphInstantiate(graph, 0)
        except TypeError:  # cuda-python 11: (graph, log buffer, size) -> (err, exec, error node)
            result = self.rt.cudaGraphInstantiate(graph, b"", 0)
        values = self._check("cudaGraphInstantiate", result)
        return values[0] if isinstance(values, tuple) else values

    def launch_graph(self, graph_exec, stream):
        self._check("cudaGraphLaunch", self.rt.cudaGraphLaunch(graph_exec, stream))

    def destroy_graph(self, graph, graph_exec):
        if graph_exec is not None:
            self._check("cudaGraphExecDestroy", self.rt.cudaGraphExecDestroy(graph_exec))
        if graph is not None:
            self._check("cudaGraphDestroy", self.rt.cudaGraphDestroy(graph))

    def device_info(self):
        device = self._check("cudaGetDevice", self.rt.cudaGetDevice())
        props = self._check("cudaGetDeviceProperties", self.rt.cudaGetDeviceProperties(device))
        name = props.name.decode("utf-8", "replace") if isinstance(props.name, bytes) else str(props.name)
        return DeviceInfo(name.split("\x00")[0].strip(), int(props.major), int(props.minor))


class PyCudaBackend(CudaBackend):
    """pycuda on the device's primary context, the context the CUDA runtime (and TensorRT) uses."""

    name = "pycuda"
    supports_graphs = False

    def __init__(self, driver):
        self.cuda = driver
        driver.init()
        self._device = driver.Device(0)
        self._context = self._device.retain_primary_context()
        self._context.push()
        self._allocations: Dict[int, object] = {}

    def malloc(self, nbytes):
        allocation = self.cuda.mem_alloc(int(nbytes))
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free(self, pointer):
        allocation = self._allocations.pop(int(pointer), None)
        if allocation is not None:
            allocation.free()

    def host_buffer(self, nbytes):
        return self.cuda.pagelocked_empty(int(nbytes), np.uint8)

    def htod_async(self, device_pointer, host, stream):
        self.cuda.memcpy_htod_async(int(device_pointer), host, stream)

    def dtoh_async(self, host, device_pointer, stream):
        self.cuda.memcpy_dtoh_async(host, int(device_pointer), stream)

    def create_stream(self):
        return self.cuda.Stream()

    def stream_handle(self, stream):
        return int(stream.handle)

    def synchronize(self, stream):
        stream.synchronize()

    def destroy_stream(self, stream):
        pass  # freed with the Python object

    def create_event(self):
        return self.cuda.Event()

    def record_event(self, event, stream):
        event.record(stream)

    def elapsed_ms(self, start, end):
        end.synchronize()
        return float(start.time_till(end))

    def destroy_event(self, event):
        pass

    def device_info(self):
        major, minor = self._device.compute_capability()
        return DeviceInfo(str(self._device.name()), int(major), int(minor))

    def close(self):
        for allocation in self._allocations.values():
            allocation.free()
        self._allocations.clear()
        try:
            self._context.pop()
        except Exception:  # noqa: BLE001 (already popped by an error path)
            pass


def cudart_candidates() -> List[str]:
    """Where libcudart.so may be: the loader path, CUDA/JetPack install dirs, and NVIDIA's pip wheels."""
    names = ["libcudart.so"]
    found = ctypes.util.find_library("cudart")
    if found:
        names.append(found)
    directories = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    directories += ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/aarch64-linux/lib",
                    "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/aarch64-linux-gnu",
                    "/usr/lib/x86_64-linux-gnu"]
    directories += [os.path.join(p, "nvidia", "cuda_runtime", "lib") for p in sys.path if p]
    for directory in directories:
        names.extend(sorted(glob.glob(os.path.join(directory, "libcudart.so*")), reverse=True))
    unique = []
    for name in names:
        if name not in unique:
            unique.append(name)
    return unique


class CtypesCudartBackend(CudaBackend):
    """The CUDA runtime C API through ctypes. Every pointer argument is wrapped, so nothing truncates to 32 bits."""

    name = "ctypes"
    # Every runtime function this backend calls; CUDA 11.4 (JetPack 5) and later export all of them.
    SYMBOLS = ("cudaMalloc", "cudaFree", "cudaMallocHost", "cudaFreeHost", "cudaMemcpyAsync", "cudaStreamCreate",
               "cudaStreamSynchronize", "cudaStreamDestroy", "cudaEventCreate", "cudaEventRecord",
               "cudaEventSynchronize", "cudaEventElapsedTime", "cudaEventDestroy", "cudaGetDevice",
               "cudaDeviceGetAttribute", "cudaGetDeviceProperties", "cudaGetErrorString")
    GRAPH_SYMBOLS = ("cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphInstantiateWithFlags",
                     "cudaGraphLaunch", "cudaGraphExecDestroy", "cudaGraphDestroy")

    def __init__(self, library_path: Optional[str] = None):
        errors = []
        self.lib = None
        for candidate in ([library_path] if library_path else cudart_candidates()):
            try:
                self.lib = ctypes.CDLL(candidate)
                self.library_path = candidate
                break
            except OSError as exc:
                errors.append(str(exc))
        if self.lib is None:
            raise OSError("libcudart.so not found ({})".format("; ".join(errors[:3]) or "no candidates"))
        missing = [symbol for symbol in self.SYMBOLS if not hasattr(self.lib, symbol)]
        if missing:
            raise OSError("{} lacks {}".format(self.library_path, ", ".join(missing)))
        self.supports_graphs = all(hasattr(self.lib, symbol) for symbol in self.GRAPH_SYMBOLS)
        self.lib.cudaGetErrorString.restype = ctypes.c_char_p
        self.lib.cudaGetErrorString.argtypes = [ctypes.c_int]
        self._host_pointers: Dict[int, int] = {}

    def _call(self, call: str, *args) -> None:
        status = getattr(self.lib, call)(*args)
        if status != 0:
            message = self.lib.cudaGetErrorString(int(status))
            raise CudaError(call, message.decode() if message else "error {}".format(status))

    def _out_pointer(self, call: str, *args) -> int:
        pointer = ctypes.c_void_p()
        self._call(call, ctypes.byref(pointer), *args)
        return int(pointer.value or 0)

    def malloc(self, nbytes):
        return self._out_pointer("cudaMalloc", ctypes.c_size_t(int(nbytes)))

    def free(self, pointer):
        self._call("cudaFree", ctypes.c_void_p(int(pointer)))

    def host_buffer(self, nbytes):
        pointer = self._out_pointer("cudaMallocHost", ctypes.c_size_t(int(nbytes)))
        array = _host_view(pointer, nbytes)
        self._host_pointers[id(array)] = pointer
        return array

    def free_host_buffer(self, array):
        pointer = self._host_pointers.pop(id(array), None)
        if pointer is not None:
            self._call("cudaFreeHost", ctypes.c_void_p(pointer))

    def _memcpy(self, dst: int, src: int, nbytes: int, kind: int, stream) -> None:
        self._call("cudaMemcpyAsync", ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes),
                   ctypes.c_int(kind), ctypes.c_void_p(stream))

    def htod_async(self, device_pointer, host, stream):
        self._memcpy(int(device_pointer), host.ctypes.data, host.nbytes, _HOST_TO_DEVICE, stream)

    def dtoh_async(self, host, device_pointer, stream):
        self._memcpy(host.ctypes.data, int(device_pointer), host.nbytes, _DEVICE_TO_HOST, stream)

    def create_stream(self):
        return self._out_pointer("cudaStreamCreate")

    def synchronize(self, stream):
        self._call("cudaStreamSynchronize", ctypes.c_void_p(stream))

    def destroy_stream(self, stream):
        self._call("cudaStreamDestroy", ctypes.c_void_p(stream))

    def create_event(self):
        return self._out_pointer("cudaEventCreate")

    def record_event(self, event, stream):
        self._call("cudaEventRecord", ctypes.c_void_p(event), ctypes.c_void_p(stream))

    def elapsed_ms(self, start, end):
        self._call("cudaEventSynchronize", ctypes.c_void_p(end))
        milliseconds = ctypes.c_float()
        self._call("cudaEventElapsedTime", ctypes.byref(milliseconds), ctypes.c_void_p(start), ctypes.c_void_p(end))
        return float(milliseconds.value)

    def destroy_event(self, event):
        self._call("cudaEventDestroy", ctypes.c_void_p(event))

    def begin_capture(self, stream):
        self._call("cudaStreamBeginCapture", ctypes.c_void_p(stream), ctypes.c_int(_CAPTURE_THREAD_LOCAL))

    def end_capture(self, stream):
        # cudaStreamEndCapture(stream, cudaGraph_t* pGraph): unlike the other calls, the out pointer comes last.
        graph = ctypes.c_void_p()
        self._call("cudaStreamEndCapture", ctypes.c_void_p(stream), ctypes.byref(graph))
        return int(graph.value or 0)

    def instantiate(self, graph):
        # cudaGraphInstantiate changed its C signature in CUDA 12; ...WithFlags is the same in 11.4+ and 12.
        return self._out_pointer("cudaGraphInstantiateWithFlags", ctypes.c_void_p(graph), ctypes.c_ulonglong(0))

    def launch_graph(self, graph_exec, stream):
        self._call("cudaGraphLaunch", ctypes.c_void_p(graph_exec), ctypes.c_void_p(stream))

    def destroy_graph(self, graph, graph_exec):
        if graph_exec:
            self._call("cudaGraphExecDestroy", ctypes.c_void_p(graph_exec))
        if graph:
            self._call("cudaGraphDestroy", ctypes.c_void_p(graph))

    def device_info(self):
        device = ctypes.c_int()
        self._call("cudaGetDevice", ctypes.byref(device))
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._call("cudaDeviceGetAttribute", ctypes.byref(major), ctypes.c_int(_ATTR_CC_MAJOR), device)
        self._call("cudaDeviceGetAttribute", ctypes.byref(minor), ctypes.c_int(_ATTR_CC_MINOR), device)
        # cudaDeviceProp starts with char name[256] in every CUDA version; the buffer is larger than the struct.
        props = ctypes.create_string_buffer(8192)
        get_props = getattr(self.lib, "cudaGetDeviceProperties_v2", None) or self.lib.cudaGetDeviceProperties
        status = get_props(props, device)
        name = props.value.decode("utf-8", "replace") if status == 0 else "unknown GPU"
        return DeviceInfo(name, major.value, minor.value)


def _load(name: str) -> CudaBackend:
    if name == "cuda-python":
        try:
            from cuda.bindings import runtime
        except ImportError:
            from cuda import cudart as runtime
        return CudaPythonBackend(runtime)
    if name == "pycuda":
        import pycuda.driver as driver
        return PyCudaBackend(driver)
    if name == "ctypes":
        return CtypesCudartBackend()
    raise UserError("unknown CUDA binding {!r}; choose one of {}".format(name, ", ".join(BACKEND_NAMES)))


def load_cuda_backend(name: Optional[str] = None) -> CudaBackend:
    """The first CUDA binding that loads (or the one named here or in ECA_DEPLOY_CUDA_BACKEND)."""
    name = name or os.environ.get(BACKEND_ENV) or None
    names = [name] if name else list(BACKEND_NAMES)
    problems = []
    for candidate in names:
        try:
            return _load(candidate)
        except (ImportError, OSError) as exc:
            problems.append("{}: {}".format(candidate, exc))
        except CudaError:
            raise
        except Exception as exc:  # noqa: BLE001 (pycuda raises its own LogicError/RuntimeError without a GPU)
            problems.append("{}: {}".format(candidate, exc))
    raise MissingDependencyError(
        "a CUDA binding (cuda-python, pycuda or libcudart.so)", "run TensorRT engines",
        "pip install cuda-python; on Jetson, JetPack's /usr/local/cuda/lib64/libcudart.so also works ({})".format(
            "; ".join(problems)))
