"""Jetson facts for reports: is this a Jetson, its power mode (nvpmodel), whether jetson_clocks pinned the clocks
and, with jetson-stats, its power draw. Nothing here changes a setting: both tools are only asked (``-q``,
``--show``) and clock files are only read.

Every call is guarded: on any other machine, or when a tool is missing, the functions return None/False and
print nothing, so callers can report what exists and stay silent otherwise.
"""
import glob
import os
import re
import subprocess
from typing import Dict, Optional

TEGRA_RELEASE = "/etc/nv_tegra_release"
DEVICE_TREE_MODEL = "/proc/device-tree/model"
SYSFS = "/sys"
# devfreq names of the integrated GPU (TX1/Nano, TX2, Xavier, Orin; JetPack 6 names it "gpu")
GPU_DEVFREQ_NAMES = ("gpu", "gm20b", "gp10b", "gv11b", "ga10b")


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


def parse_jetson_clocks(output: str) -> Optional[bool]:
    """Whether ``jetson_clocks --show`` shows the clocks pinned: jetson_clocks sets each CPU's and the GPU's
    MinFreq to its MaxFreq. EMC and DLA/PVA lines are left out: their MinFreq stays below MaxFreq either way."""
    pinned = []
    for line in output.splitlines():
        if re.match(r"\s*(cpu\d+|GPU)\b", line):
            freqs = dict(re.findall(r"(MinFreq|MaxFreq)=(\d+)", line))
            if len(freqs) == 2:
                pinned.append(freqs["MinFreq"] == freqs["MaxFreq"])
    return all(pinned) if pinned else None


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path, "r") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def clocks_pinned_in_sysfs(root: str = SYSFS) -> Optional[bool]:
    """The same test on the clock files jetson_clocks writes (readable without root): each online CPU's
    scaling_min_freq equals its scaling_max_freq, and the GPU's devfreq min_freq its max_freq."""
    pairs = [(os.path.join(folder, "scaling_min_freq"), os.path.join(folder, "scaling_max_freq"))
             for folder in glob.glob(os.path.join(root, "devices/system/cpu/cpu[0-9]*/cpufreq"))]
    pairs += [(os.path.join(folder, "min_freq"), os.path.join(folder, "max_freq"))
              for folder in glob.glob(os.path.join(root, "class/devfreq/*"))
              if any(name in os.path.basename(folder) for name in GPU_DEVFREQ_NAMES)]
    values = [(_read_int(low), _read_int(high)) for low, high in pairs]
    values = [(low, high) for low, high in values if low is not None and high is not None]
    return all(low == high for low, high in values) if values else None


def jetson_clocks_state(timeout: float = 5.0) -> Optional[Dict[str, object]]:
    """{"on": bool, "source": how it was read}, or None when neither the tool nor the clock files tell."""
    try:
        result = subprocess.run(["jetson_clocks", "--show"], capture_output=True, text=True, timeout=timeout,
                                check=False)
        shown = parse_jetson_clocks(result.stdout) if result.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):  # not installed, or it hung
        shown = None
    if shown is not None:
        return {"on": shown, "source": "jetson_clocks --show"}
    pinned = clocks_pinned_in_sysfs()
    return None if pinned is None else {"on": pinned, "source": "cpufreq/devfreq min == max"}


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
    """What can be said about this Jetson (model, power mode, jetson_clocks, power draw), or None when not on
    a Jetson."""
    if not is_jetson():
        return None
    report: Dict[str, object] = {"model": device_model()}
    mode = power_mode()
    if mode is not None:
        report["power_mode"] = mode
    clocks = jetson_clocks_state()
    if clocks is not None:
        report["jetson_clocks"] = clocks
    power = power_draw()
    if power is not None:
        report["power"] = power
    return report
