"""What a benchmark ran on: CPU, GPU, library versions, threads, ONNX Runtime settings, Jetson power mode.

Every probe is guarded: a missing tool or package is recorded as absent, never an error.
"""
import importlib
import os
import platform
import shutil
import subprocess
import sys
from typing import Dict, Optional

from .openmp import wait_policy

_LIBRARIES = ("torch", "onnxruntime", "onnx", "numpy", "tensorrt")


def cpu_model(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    fields = {}
    try:
        with open(cpuinfo_path, "r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    # x86 says "model name" ("model" is a number there); ARM boards (Jetson) say "Model" or only "Hardware".
    for key in ("model name", "hardware", "model"):
        if fields.get(key) and not fields[key].isdigit():
            return fields[key]
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, which containers and taskset restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run(command, timeout: float = 10.0) -> Optional[str]:
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=timeout,
                              check=False, universal_newlines=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def gpus() -> list:
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if not out:
        return []
    rows = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        rows.append({"name": parts[0], "driver": parts[1] if len(parts) > 1 else "",
                     "memory": parts[2] if len(parts) > 2 else ""})
    return rows


def library_versions() -> Dict[str, Optional[str]]:
    """Versions of the libraries that shape the numbers; None for one that cannot be imported."""
    versions = {}
    for name in _LIBRARIES:
        try:
            module = importlib.import_module(name)  # tensorrt is imported only here, inside a function
        except Exception:  # ImportError, or a broken CUDA install raising OSError/RuntimeError
            versions[name] = None
            continue
        versions[name] = str(getattr(module, "__version__", "unknown"))
    return versions


def jetson_info() -> Optional[Dict[str, object]]:
    """Board model, power mode (nvpmodel) and power draw on a Jetson; None elsewhere."""
    try:
        from deploy.jetson import jetson_report
    except ImportError:  # deploy/ trimmed down on a device; the power mode is informational
        return None
    try:
        return jetson_report()
    except Exception:  # noqa: BLE001 (a board without nvpmodel access must not fail a benchmark)
        return None


def collect_environment(threads: Optional[int] = None, ort_settings: Optional[dict] = None) -> Dict[str, object]:
    jetson = jetson_info()
    return {
        "cpu": cpu_model(),
        "cpu_cores": cpu_count(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "gpus": gpus(),
        "libraries": library_versions(),
        "threads": threads,
        "onnxruntime_session": ort_settings or {},
        "omp_wait_policy": wait_policy(),
        "jetson": jetson,
        "jetson_power_mode": (jetson or {}).get("power_mode"),
    }
