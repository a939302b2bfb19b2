"""TensorRT runner over Polygraphy's ``TrtRunner``, with the sidecar check before the engine loads and CUDA graphs.

The sidecar is checked against the running TensorRT and GPU first, so a stale engine fails with a message
instead of a crash. The plain path is ``TrtRunner.infer`` (named I/O tensors, TensorRT 8.5 to 11). TrtRunner has
no CUDA graphs, so with ``use_cuda_graph`` this runner binds fixed Polygraphy ``DeviceArray`` buffers on
TrtRunner's own context and stream, captures ``execute_async_v3`` once per input shape and replays it; where
capture fails it says so in ``notes`` and falls back to the plain path, as trtexec does.

``inference_times`` (BaseRunner) is end to end, host to host. ``compute_times`` is the engine alone between CUDA
events (trtexec's GPU compute time), on the CUDA-graph path and, with ``time_compute``, on the same bound buffers
without a graph: TrtRunner copies and computes in one call, so its own path cannot be split.
"""
import os
from typing import Dict, List, Optional

import numpy as np

from ..errors import UserError
from ..metadata import read_sidecar
from ..trt.profiles import check_input_shape
from .base import BaseRunner, TensorMeta


class TensorRTRunner(BaseRunner):
    backend = "tensorrt"

    def __init__(self, engine_path, use_cuda_graph: bool = False, check_sidecar: bool = True,
                 name: Optional[str] = None, time_compute: bool = False):
        super().__init__(name or os.path.basename(os.fspath(engine_path)))
        self.engine_path, self.use_cuda_graph = os.fspath(engine_path), use_cuda_graph
        self.time_compute = time_compute
        self.check_sidecar = check_sidecar
        self.compute_times: List[float] = []
        self.notes: List[str] = []
        self._runner = self._version = self._device = self._graph = None  # _graph: (shapes, buffers, graph, events)
        self._inputs: Dict[str, TensorMeta] = {}
        self._outputs: Dict[str, TensorMeta] = {}
        self._profiles: Dict[str, tuple] = {}
        self._graph_failed = False

    def activate_impl(self) -> None:
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        from ..trt.compat import import_tensorrt, polygraphy_errors
        from ..trt.cuda import device_info
        from ..trt.sidecar import check_engine_compatible

        if not os.path.isfile(self.engine_path):
            raise UserError("no such engine file: {}".format(self.engine_path))
        trt = import_tensorrt("run TensorRT engines")
        self._version, self._device = trt.__version__, device_info()
        sidecar = read_sidecar(self.engine_path)
        if sidecar is None:
            self.notes.append("{} has no sidecar, so its TensorRT version and GPU were not checked".format(
                os.path.basename(self.engine_path)))
        elif self.check_sidecar:
            self.notes.extend(check_engine_compatible(sidecar, self._version, self._device, self.engine_path))
        runner = TrtRunner(EngineFromBytes(BytesFromPath(self.engine_path)), name=self.name)
        try:
            runner.activate()
        except polygraphy_errors() as exc:
            raise UserError("TensorRT {} cannot load {}: {}; rebuild it here".format(
                self._version, self.engine_path, str(exc).strip().splitlines()[-1])) from None
        self._runner = runner
        engine = runner.engine
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            shape = tuple(int(dim) for dim in engine.get_tensor_shape(name))
            meta = TensorMeta(tuple(None if dim < 0 else dim for dim in shape),
                              np.dtype(trt.nptype(engine.get_tensor_dtype(name))))
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outputs)[name] = meta
            if is_input and any(dim < 0 for dim in shape):
                self._profiles[name] = self._profile_shape(engine, name)

    def _profile_shape(self, engine, name: str):
        from ..trt.version import TrtVersion
        if TrtVersion.parse(self._version).has_tensor_profile_shape:
            shapes = engine.get_tensor_profile_shape(name, 0)
        else:
            shapes = engine.get_profile_shape(0, name)
        return tuple(tuple(int(dim) for dim in shape) for shape in shapes)

    def deactivate_impl(self) -> None:
        self._free_graph()
        if self._runner is not None:
            self._runner.deactivate()
        self._runner, self._inputs, self._outputs, self._profiles = None, {}, {}, {}

    def get_input_metadata(self) -> Dict[str, TensorMeta]:
        return dict(self._inputs)

    def get_output_metadata(self) -> Dict[str, TensorMeta]:
        return dict(self._outputs)

    def profile(self, input_name: str):
        """(min, opt, max) shapes of a dynamic input, or None for a static one."""
        return self._profiles.get(input_name)

    def infer_impl(self, feed_dict: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        arrays = {}
        for name, meta in self._inputs.items():
            arrays[name] = np.ascontiguousarray(feed_dict[name], dtype=meta.dtype)
            check_input_shape(name, tuple(-1 if d is None else d for d in meta.shape), arrays[name].shape,
                              self._profiles.get(name))
        if (self.use_cuda_graph or self.time_compute) and not self._graph_failed:
            from ..trt.cuda import CudaError
            try:
                return self._infer_graph(arrays)
            except (CudaError, UserError) as exc:
                self._graph_failed = True
                self._free_graph()
                self.notes.append("{} failed ({}); running through TrtRunner, without {}".format(
                    "CUDA graph capture" if self.use_cuda_graph else "execution on bound buffers", exc,
                    "CUDA graphs" if self.use_cuda_graph else "GPU compute timing"))
        outputs = self._runner.infer(arrays)
        return {name: np.array(outputs[name]) for name in self._outputs}

    def _infer_graph(self, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        from ..trt.cuda import Event

        shapes = {name: array.shape for name, array in arrays.items()}
        if self._graph is None or self._graph[0] != shapes:
            self._capture(arrays, shapes)
        _, buffers, graph, (start, end) = self._graph
        stream = self._runner.stream
        for name, array in arrays.items():
            buffers[name].copy_from(array, stream=stream)
        start.record(stream.ptr)
        graph.launch(stream.ptr)
        end.record(stream.ptr)
        outputs = {name: np.empty(buffers[name].shape, meta.dtype) for name, meta in self._outputs.items()}
        for name, host in outputs.items():
            buffers[name].copy_to(host, stream=stream)
        stream.synchronize()
        self.compute_times.append(Event.elapsed_ms(start, end) / 1000.0)
        return outputs

    def _capture(self, arrays: Dict[str, np.ndarray], shapes) -> None:
        from polygraphy import cuda

        from ..trt.cuda import Event, Graph

        self._free_graph()
        context, stream, buffers = self._runner.context, self._runner.stream, {}
        for name, array in arrays.items():
            if not context.set_input_shape(name, array.shape):
                raise UserError("TensorRT refused shape {} for input {!r}".format(array.shape, name))
        for name, meta in list(self._inputs.items()) + list(self._outputs.items()):
            shape = arrays[name].shape if name in arrays else tuple(context.get_tensor_shape(name))
            buffers[name] = cuda.DeviceArray(shape=shape, dtype=meta.dtype)
            context.set_tensor_address(name, buffers[name].ptr)
            if name in arrays:
                buffers[name].copy_from(arrays[name], stream=stream)

        def execute():
            if not context.execute_async_v3(stream.ptr):
                raise UserError("TensorRT failed to execute {}".format(self.engine_path))
        execute()  # TensorRT finishes its lazy setup for these shapes outside the capture
        stream.synchronize()
        events = (Event(), Event())
        self._graph = (shapes, buffers, None, events)  # freed by _free_graph if the capture fails
        self._graph = (shapes, buffers, Graph(stream.ptr, execute) if self.use_cuda_graph else _Direct(execute), events)

    def _free_graph(self) -> None:
        if self._graph is not None:
            _, buffers, graph, events = self._graph
            for item in list(buffers.values()) + list(events) + [graph] * (graph is not None):
                item.free()
        self._graph = None

    def describe(self) -> Dict[str, object]:
        info = super().describe()
        info.update({"engine": self.engine_path, "tensorrt_version": self._version,
                     "cuda_binding": "polygraphy.cuda (libcudart)",
                     "device": self._device.to_dict() if self._device else None,
                     "cuda_graph": bool(self.use_cuda_graph and not self._graph_failed),
                     "gpu_compute_timing": bool((self.use_cuda_graph or self.time_compute) and not self._graph_failed),
                     "notes": list(self.notes)})
        return info


class _Direct:
    """Stands where the captured Graph would: each launch enqueues the execution itself, for ``time_compute``."""

    def __init__(self, execute):
        self.launch = lambda stream_ptr: execute()

    def free(self) -> None:
        pass
