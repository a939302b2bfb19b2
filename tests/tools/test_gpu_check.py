"""`make gpu-check` where there is no GPU (here), and with every optional package missing."""
import os
import subprocess
import sys

from tests.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import gpu_check  # noqa: E402


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0():
    if gpu_check.gpu_present():
        return  # a GPU machine runs the real checks (make gpu-check), not this path
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gpu_check.py")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.splitlines() == ["gpu-check: no NVIDIA GPU on this machine (no nvidia-smi, no /dev/nvidia0); "
                                        "nothing to check"]


def test_each_check_copes_with_what_is_missing(monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "gpu_present", lambda: True)
    monkeypatch.setattr(gpu_check, "has", lambda module: False)  # no polygraphy, torch, onnxsim or TensorRT
    monkeypatch.setattr(gpu_check, "RESULTS", [])
    assert gpu_check.main() == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("gpu-check on ") and lines[-1].startswith("gpu-check: 0 pass, 0 fail, 4 skipped")
    assert [line.split()[0] for line in lines[1:-1]] == ["cuda", "export", "benchmark-engine", "tensorrt"]
    assert all(" SKIP " in line for line in lines[1:-1])
