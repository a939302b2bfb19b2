"""TensorRT runner: named I/O tensors (``set_tensor_address`` + ``execute_async_v3``, TensorRT 8.5 and later).

Before deserializing, the engine's sidecar is checked against the running TensorRT and GPU, so a stale engine
fails with a message instead of a crash. Device memory and the stream come from whichever CUDA binding is
installed (``deploy.trt.cuda``). Buffers grow to the largest shape seen and are reused.

Two clocks, because benchmarks report both: ``inference_times`` (from BaseRunner) is end to end, host to host
(H2D copy + compute + D2H copy + synchronize); ``compute_times`` is the GPU time between CUDA events recorded
around the engine's execution alone (trtexec's "GPU Compute Time"). Both are in seconds.

With ``use_cuda_graph`` the execution is captured once per input shape (after one plain run, which TensorRT needs
to finish its lazy setup) and replayed with ``cudaGraphLaunch``. Where capture fails (some layers, DLA, pycuda)
the runner says so in ``notes`` and runs without graphs, as trtexec does.
"""
import os
from typing import Dict, List, Optional

import numpy as np

from ..errors import CheckFailedError, UserError
from ..metadata import read_sidecar
from ..trt.profiles import check_input_shape, is_dynamic
from .base import BaseRunner, TensorMeta


class TensorRTRunner(BaseRunner):
    backend = "tensorrt"

    def __init__(self, engine_path, use_cuda_graph: bool = False, cuda_backend: Optional[str] = None,
                 check_sidecar: bool = True, name: Optional[str] = None):
        super().__init__(name or os.path.basename(os.fspath(engine_path)))
        self.engine_path = os.fspath(engine_path)
        self.use_cuda_graph = use_cuda_graph
        self.cuda_backend_name = cuda_backend
        self.check_sidecar = check_sidecar
        self.compute_times: List[float] = []
        self.notes: List[str] = []
        self._clear_state()

    def _clear_state(self) -> None:
        self._compat = self._cuda = self._device = None
        self._logger = self._runtime = self._engine = self._context = None
        self._stream = self._events = None
        self._tensors = []
        self._profiles: Dict[str, tuple] = {}
        self._device_buffers: Dict[str, tuple] = {}  # name -> (pointer, capacity in bytes)
        self._host_buffers: Dict[str, np.ndarray] = {}
        self._shapes: Dict[str, tuple] = {}
        self._graph = self._graph_exec = None
        self._graph_failed = False

    # -- lifecycle -------------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        from ..trt.compat import TrtCompat, import_tensorrt, make_logger
        from ..trt.cuda import load_cuda_backend
        from ..trt.sidecar import check_engine_compatible

        if not os.path.isfile(self.engine_path):
            raise UserError("no such engine file: {}".format(self.engine_path))
        trt = import_tensorrt("run TensorRT engines")
        self._compat = TrtCompat(trt)
        self._cuda = load_cuda_backend(self.cuda_backend_name)
        try:
            self._device = self._cuda.device_info()
            sidecar = read_sidecar(self.engine_path)
            if sidecar is None:
                self.notes.append("{} has no sidecar, so its TensorRT version and GPU were not checked".format(
                    os.path.basename(self.engine_path)))
            elif self.check_sidecar:
                self.notes.extend(check_engine_compatible(sidecar, self._compat.version_string, self._device,
                                                          self.engine_path))
            self._load(trt, make_logger(trt), bool(sidecar and sidecar.get("version_compatible")))
        except BaseException:
            self._release()
            raise

    def _load(self, trt, logger, version_compatible: bool) -> None:
        compat = self._compat
        self._logger = logger
        self._runtime = trt.Runtime(logger)
        if version_compatible:
            compat.allow_engine_host_code(self._runtime)
        with open(self.engine_path, "rb") as handle:
            self._engine = self._runtime.deserialize_cuda_engine(handle.read())
        if self._engine is None:
            raise UserError("TensorRT {} cannot load {}: {}".format(
                compat.version_string, self.engine_path, "; ".join(logger.errors[-2:]) or
                "it was probably built by another TensorRT version or for another GPU; rebuild it here"))
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise UserError("TensorRT could not create an execution context for {} (out of device memory?)".format(
                self.engine_path))
        self._tensors = compat.io_tensors(self._engine)
        self._profiles = {t.name: compat.profile_shape(self._engine, t.name, 0)
                          for t in self._tensors if t.is_input and any(dim < 0 for dim in t.shape)}
        self._stream = self._cuda.create_stream()
        self._events = (self._cuda.create_event(), self._cuda.create_event())

    def deactivate_impl(self) -> None:
        self._release()

    def _release(self) -> None:
        cuda = self._cuda
        if cuda is not None:
            self._destroy_graph()
            for pointer, _ in self._device_buffers.values():
                cuda.free(pointer)
            for array in self._host_buffers.values():
                cuda.free_host_buffer(array)
            for event in self._events or ():
                cuda.destroy_event(event)
            if self._stream is not None:
                cuda.destroy_stream(self._stream)
        # The context must go before the engine, and the engine before the runtime.
        self._context = None
        self._engine = None
        self._runtime = None
        if cuda is not None:
            cuda.close()
        self._clear_state()

    # -- metadata --------------------------------------------------------------------------------------
    def _meta(self, inputs: bool) -> Dict[str, TensorMeta]:
        return {t.name: TensorMeta(tuple(None if dim < 0 else dim for dim in t.shape), t.dtype)
                for t in self._tensors if t.is_input == inputs}

    def get_input_metadata(self) -> Dict[str, TensorMeta]:
        return self._meta(True)

    def get_output_metadata(self) -> Dict[str, TensorMeta]:
        return self._meta(False)

    def profile(self, input_name: str):
        """(min, opt, max) shapes of a dynamic input, or None for a static one."""
        return self._profiles.get(input_name)

    # -- inference -------------------------------------------------------------------------------------
    def _set_shapes(self, feed_dict) -> Dict[str, np.ndarray]:
        arrays = {}
        for tensor in (t for t in self._tensors if t.is_input):
            array = np.ascontiguousarray(feed_dict[tensor.name], dtype=tensor.dtype)
            check_input_shape(tensor.name, tensor.shape, array.shape, self._profiles.get(tensor.name))
            if self._shapes.get(tensor.name) != array.shape:
                if not self._compat.set_input_shape(self._context, tensor.name, array.shape):
                    raise UserError("TensorRT refused shape {} for input {!r}: {}".format(
                        array.shape, tensor.name, "; ".join(self._logger.errors[-1:])))
                self._shapes[tensor.name] = array.shape
                self._destroy_graph()
            arrays[tensor.name] = array
        return arrays

    def _buffer(self, name: str, nbytes: int) -> int:
        """The tensor's device pointer, grown (and its host staging buffer with it) when ``nbytes`` is larger."""
        pointer, capacity = self._device_buffers.get(name, (0, 0))
        if nbytes > capacity:
            if pointer:
                self._cuda.free(pointer)
                self._cuda.free_host_buffer(self._host_buffers.pop(name))
            capacity = max(nbytes, 1)
            pointer = self._cuda.malloc(capacity)
            self._device_buffers[name] = (pointer, capacity)
            self._host_buffers[name] = self._cuda.host_buffer(capacity)
            self._compat.set_tensor_address(self._context, name, pointer)
            self._destroy_graph()
        return pointer

    def infer_impl(self, feed_dict: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        cuda, stream = self._cuda, self._stream
        inputs = self._set_shapes(feed_dict)
        outputs = {}
        for tensor in (t for t in self._tensors if not t.is_input):
            shape = self._compat.output_shape(self._context, tensor.name)
            if any(is_dynamic(dim) for dim in shape):
                raise UserError("TensorRT could not infer the shape of output {!r} ({})".format(tensor.name, shape))
            outputs[tensor.name] = (shape, tensor.dtype)
        sizes = {name: array.nbytes for name, array in inputs.items()}
        sizes.update({name: int(np.prod(shape)) * dtype.itemsize for name, (shape, dtype) in outputs.items()})
        pointers = {name: self._buffer(name, nbytes) for name, nbytes in sizes.items()}

        for name, array in inputs.items():
            staging = self._host_buffers[name][:array.nbytes]
            np.copyto(staging, array.reshape(-1).view(np.uint8))
            cuda.htod_async(pointers[name], staging, stream)
        cuda.record_event(self._events[0], stream)
        self._execute()
        cuda.record_event(self._events[1], stream)
        for name in outputs:
            cuda.dtoh_async(self._host_buffers[name][:sizes[name]], pointers[name], stream)
        cuda.synchronize(stream)
        self.compute_times.append(cuda.elapsed_ms(*self._events) / 1000.0)
        return {name: self._host_buffers[name][:sizes[name]].view(dtype).reshape(shape).copy()
                for name, (shape, dtype) in outputs.items()}

    def _run_engine(self) -> None:
        if not self._compat.execute(self._context, self._cuda.stream_handle(self._stream)):
            raise CheckFailedError("TensorRT failed to execute {}: {}".format(
                self.engine_path, "; ".join(self._logger.errors[-2:]) or "no details"))

    def _execute(self) -> None:
        if not self.use_cuda_graph or self._graph_failed or not self._cuda.supports_graphs:
            if self.use_cuda_graph and not self._cuda.supports_graphs and not self._graph_failed:
                self._graph_failed = True
                self.notes.append("CUDA graphs need cuda-python or libcudart.so; running without them")
            self._run_engine()
            return
        if self._graph_exec is None:
            self._capture()
        if self._graph_exec is not None:
            self._cuda.launch_graph(self._graph_exec, self._stream)
        else:
            self._run_engine()

    def _capture(self) -> None:
        from ..trt.cuda import CudaError

        cuda, stream = self._cuda, self._stream
        self._run_engine()  # TensorRT finishes its lazy setup for these shapes outside the capture
        cuda.synchronize(stream)
        graph = None
        try:
            cuda.begin_capture(stream)
            try:
                self._run_engine()
            finally:
                graph = cuda.end_capture(stream)
            self._graph, self._graph_exec = graph, cuda.instantiate(graph)
        except (CudaError, CheckFailedError) as exc:
            self._graph_failed = True
            self.notes.append("CUDA graph capture failed ({}); running without CUDA graphs".format(exc))
            if graph is not None:
                cuda.destroy_graph(graph, None)
            self._graph = self._graph_exec = None

    def _destroy_graph(self) -> None:
        if self._cuda is not None and (self._graph is not None or self._graph_exec is not None):
            self._cuda.destroy_graph(self._graph, self._graph_exec)
        self._graph = self._graph_exec = None

    def describe(self) -> Dict[str, object]:
        info = super().describe()
        info.update({
            "engine": self.engine_path,
            "tensorrt_version": self._compat.version_string if self._compat else None,
            "cuda_binding": self._cuda.name if self._cuda else None,
            "device": self._device.to_dict() if self._device else None,
            "cuda_graph": bool(self.use_cuda_graph and not self._graph_failed),
            "notes": list(self.notes),
        })
        return info
