"""The PyTorch reference as a runner with the deploy runners' interface (input "input", output "logits").

Timing follows the other runners: ``inference_times`` is the wall time of each ``infer`` call, host arrays in
and out. On a CUDA device ``compute_times`` is the forward alone, timed with CUDA events, so end-to-end and
compute-only numbers can be reported side by side as for TensorRT engines.

``precision="fp16"`` runs a half-precision, channels-last copy of the model (what a GPU user compares a
TensorRT FP16 engine with); inputs and outputs stay float32 arrays, like an FP16 ONNX model with float32 I/O.
"""
import copy
from typing import Dict, List, Optional

import numpy as np
import torch

from deploy.errors import UserError
from deploy.preprocess import PreprocessSpec, network_input
from deploy.runners.base import BaseRunner, TensorMeta
from deploy.runners.execution import INPUT_NAME, OUTPUT_NAME


class TorchRunner(BaseRunner):
    backend = "pytorch"

    def __init__(self, model: torch.nn.Module, threads: Optional[int] = None, device: str = "cpu",
                 use_cuda_graph: bool = False, name: Optional[str] = None, precision: str = "fp32",
                 spec: Optional[PreprocessSpec] = None):
        super().__init__(name or "pytorch {}".format(getattr(model, "arch", type(model).__name__)))
        self.spec = spec  # the artifacts' preprocessing: with in-graph normalization they are fed pixels
        if precision not in ("fp32", "fp16"):
            raise UserError("PyTorch reference precision must be fp32 or fp16, got {!r}".format(precision))
        self.model = model
        self.precision = precision
        self._module = None  # what runs: the model, or its FP16 channels-last copy
        self.threads = threads
        self.device = torch.device(device)
        self.use_cuda_graph = bool(use_cuda_graph) and self.device.type == "cuda"
        self.compute_times: List[float] = []
        self._saved_threads = None
        self._saved_tf32 = None
        self._graphs = {}

    def activate_impl(self) -> None:
        if self.threads:
            # torch's pool is process-wide: set it for the run and restore it, so callers see no side effect.
            self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(int(self.threads))
        if self.device.type == "cuda":
            # TF32 would turn an FP32 reference into a reduced-precision one. The flags are process-wide: save
            # them here and restore them in deactivate, like the thread count.
            self._saved_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.model = self.model.to(self.device).eval()
        if self.precision == "fp16":  # a copy, so the caller's model stays FP32
            self._module = copy.deepcopy(self.model).half().to(memory_format=torch.channels_last)
        else:
            self._module = self.model

    def deactivate_impl(self) -> None:
        if self._saved_threads is not None:
            torch.set_num_threads(self._saved_threads)
            self._saved_threads = None
        if self._saved_tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved_tf32
            self._saved_tf32 = None
        self._graphs.clear()
        self._module = None

    def get_input_metadata(self) -> Dict[str, TensorMeta]:
        return {INPUT_NAME: TensorMeta(("batch", 3, None, None), np.dtype(np.float32))}

    def get_output_metadata(self) -> Dict[str, TensorMeta]:
        return {OUTPUT_NAME: TensorMeta(("batch", None), np.dtype(np.float32))}

    def infer_impl(self, feed_dict):
        batch = np.ascontiguousarray(feed_dict[INPUT_NAME], dtype=np.float32)
        if self.spec is not None:  # on the host, so inside the end-to-end time but outside compute_times
            batch = network_input(batch, self.spec)
        with torch.inference_mode():
            if self.device.type != "cuda":
                return {OUTPUT_NAME: self._forward(self._prepare(torch.from_numpy(batch))).float().numpy()}
            return {OUTPUT_NAME: self._infer_cuda(batch)}

    def _prepare(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.precision == "fp16":
            return inputs.half().contiguous(memory_format=torch.channels_last)
        return inputs

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._module(inputs)

    def _infer_cuda(self, batch: np.ndarray) -> np.ndarray:
        inputs = self._prepare(torch.from_numpy(batch).to(self.device, non_blocking=False))
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        if self.use_cuda_graph:
            graph, static_in, static_out = self._graph_for(inputs)
            static_in.copy_(inputs)
            start.record()
            graph.replay()
            end.record()
            outputs = static_out
        else:
            start.record()
            outputs = self._forward(inputs)
            end.record()
        result = outputs.float().cpu().numpy()  # synchronizes the stream
        self.compute_times.append(start.elapsed_time(end) / 1000.0)
        return result

    def _graph_for(self, inputs: torch.Tensor):
        key = tuple(inputs.shape)
        if key not in self._graphs:
            static_in = inputs.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # cuDNN picks its kernels on warm-up runs outside the capture
                for _ in range(2):
                    self._forward(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_in)
            self._graphs[key] = (graph, static_in, static_out)
        return self._graphs[key]

    def describe(self):
        info = super().describe()
        info.update({
            "device": str(self.device),
            "threads": torch.get_num_threads() if self.is_active else self.threads,
            "cuda_graph": self.use_cuda_graph,
            "precision": self.precision,
            "memory_format": "channels_last" if self.precision == "fp16" else "contiguous",
            "torch_version": torch.__version__,
        })
        return info
