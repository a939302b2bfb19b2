"""PyTorch's OpenMP threads wait passively, as ONNX Runtime's sessions do (issue 28).

PyTorch's pool (libgomp here) spin-waits at every barrier by default. On a shared or 2-core machine a thread whose
peer is descheduled spins away the time that peer needs: measured here, ECA-ResNet-18 at 64x64, batch 1, 2 threads,
load average about 6: 44 ms with OMP_WAIT_POLICY=PASSIVE, 160-470 ms without (docs/PERFORMANCE.md). While it spins
it also holds the cores ONNX Runtime is timed on next. libgomp reads the variable when it loads, so this must run
before torch is imported: the timing entry points (cli.py, `make bench`, the baseline bench) call it first.
"""
import os

WAIT_POLICY = "OMP_WAIT_POLICY"


def wait_passively() -> str:
    """OMP_WAIT_POLICY=PASSIVE unless the user chose a policy; returns the policy in effect for this process."""
    os.environ.setdefault(WAIT_POLICY, "PASSIVE")
    return os.environ[WAIT_POLICY]


def wait_policy() -> str:
    """What PyTorch's OpenMP threads do between parallel regions in this process, for the benchmark's environment."""
    return os.environ.get(WAIT_POLICY) or "default (spin, then sleep)"
