"""Right after export: the ONNX model in ONNX Runtime (CPU) against PyTorch, on the same real images."""
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np
import torch

from deploy.compare import LogitComparison, compare_logits
from deploy.images import sample_images
from deploy.preprocess import PreprocessSpec, network_input, preprocess_file
from deploy.runners import OnnxRuntimeRunner

from .onnx_graph import INPUT_NAME, OUTPUT_NAME

# FP32 ONNX Runtime and PyTorch differ only in summation order: errors are ~1e-6 of the logit range.
FP32_ATOL = 1e-4
FP32_RTOL = 1e-3


@dataclass
class ParityReport:
    comparisons: List[LogitComparison] = field(default_factory=list)
    providers: List[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return all(self.comparisons)

    @property
    def max_abs_error(self) -> float:
        return max(c.max_abs_error for c in self.comparisons)

    def to_dict(self) -> Dict[str, object]:
        return {
            "passed": bool(self),
            "max_abs_error": self.max_abs_error,
            "providers": self.providers,
            "batches": [c.to_dict() for c in self.comparisons],
        }


def sample_batch(spec: PreprocessSpec, batch_size: int) -> np.ndarray:
    """``batch_size`` real photos through the model's own preprocessing, cycling the shipped samples."""
    paths = sample_images()
    arrays = [preprocess_file(paths[i % len(paths)], spec) for i in range(min(batch_size, len(paths)))]
    return np.stack([arrays[i % len(arrays)] for i in range(batch_size)])


def check_parity(model: torch.nn.Module, onnx_path, spec: PreprocessSpec, batch_sizes: Sequence[int],
                 atol: float = FP32_ATOL, rtol: float = FP32_RTOL) -> ParityReport:
    report = ParityReport()
    with OnnxRuntimeRunner(onnx_path, providers=("cpu",)) as runner:
        report.providers = runner.active_providers
        for batch_size in batch_sizes:
            inputs = sample_batch(spec, batch_size)
            with torch.no_grad():
                expected = model(torch.from_numpy(network_input(inputs, spec))).numpy()
            actual = runner.infer({INPUT_NAME: inputs})[OUTPUT_NAME]
            report.comparisons.append(compare_logits(expected, actual, atol=atol, rtol=rtol))
    return report
