"""Shared fixtures, and the rule that TensorRT/GPU tests skip with a stated reason when the hardware is absent."""
import importlib.util
import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _tensorrt_missing_reason():
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt Python package is not installed (TensorRT cannot run on this machine)"
    return None


def _gpu_missing_reason():
    if shutil.which("nvidia-smi") is None and not os.path.exists("/dev/nvidia0"):
        return "no NVIDIA GPU on this machine"
    if not any(importlib.util.find_spec(name) for name in ("cuda", "pycuda")):
        return "no CUDA Python binding (cuda-python or pycuda) is installed"
    return None


def pytest_collection_modifyitems(config, items):
    reasons = {"tensorrt": _tensorrt_missing_reason(), "gpu": _gpu_missing_reason()}
    for item in items:
        for marker, reason in reasons.items():
            if reason and item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))
