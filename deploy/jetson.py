"""Jetson facts for reports: is this a Jetson, its power mode (nvpmodel) and, with jetson-stats, its power draw.

Every call is guarded: on any other machine, or when a tool is missing, the functions return None/False and
print nothing, so callers can report what exists and stay silent otherwise.
"""
import os
import subprocess
from typing import Dict, Optional

TEGRA_RELEASE = "/etc/nv_tegra_release"
DEVICE_TREE_MODEL = "/proc/device-tree/model"


def device_model(model_path: str = DEVICE_TREE_MODEL) -> Optional[str]:
    try:
        with open(model_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace").strip("\x00 \n") or None
    except OSError:
        return None


def is_jetson(release_path: str = TEGRA_RELEASE, model_path: str = DEVICE_TREE_MODEL) -> bool:
    if os.path.exists(release_path):
        return True
    model = device_model(model_path) or ""
    return "jetson" in model.lower() or "nvidia" in model.lower()


def parse_nvpmodel(output: str) -> Optional[Dict[str, object]]:
    """``nvpmodel -q`` prints "NV Power Mode: MAXN" and, on the next line, the mode's number."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.lower().startswith("nv power mode"):
            mode = {"name": line.split(":", 1)[1].strip() if ":" in line else ""}
            if index + 1 < len(lines) and lines[index + 1].isdigit():
                mode["id"] = int(lines[index + 1])
            return mode
    return None


def power_mode(timeout: float = 5.0) -> Optional[Dict[str, object]]:
    try:
        result = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvpmodel(result.stdout) if result.returncode == 0 else None


def power_draw() -> Optional[Dict[str, float]]:
    """Board power from jetson-stats (``jtop``): current and average total in milliwatts, when installed."""
    try:
        from jtop import jtop
    except Exception:  # noqa: BLE001 (not installed, or its service is missing)
        return None
    try:
        with jtop() as jetson:
            total = jetson.power["tot"]
            return {"total_mw": float(total["power"]), "average_mw": float(total["avg"])}
    except Exception:  # noqa: BLE001 (jtop raises its own exceptions when the service is down or keys differ)
        return None


def jetson_report() -> Optional[Dict[str, object]]:
    """What can be said about this Jetson (model, power mode, power draw), or None when not on a Jetson."""
    if not is_jetson():
        return None
    report: Dict[str, object] = {"model": device_model()}
    mode = power_mode()
    if mode is not None:
        report["power_mode"] = mode
    power = power_draw()
    if power is not None:
        report["power"] = power
    return report
