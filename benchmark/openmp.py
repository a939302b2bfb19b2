"""What PyTorch's OpenMP threads do between parallel regions, recorded with every benchmark (issue 28).

PyTorch's pool (libgomp here) spin-waits at barriers by default; OMP_WAIT_POLICY=PASSIVE makes it sleep. Measured
(docs/PERFORMANCE.md, `python -m benchmark.bench_baseline`): on a loaded 2-core machine spinning made PyTorch
4-10x slower than passive and less steady in turns with ONNX Runtime; on a lightly loaded one spinning was PyTorch's
faster setting (batch 1 13 ms against 20 ms passive). This project leaves the policy to the user, because a
speed-up must be against PyTorch's own speed, and records it; where the machine disturbs PyTorch, benchmark-engine
says the baseline is disturbed instead of giving a speed-up. libgomp reads the variable when torch loads.
"""
import os

WAIT_POLICY = "OMP_WAIT_POLICY"


def wait_policy() -> str:
    """The policy of this process's PyTorch OpenMP threads, for the benchmark's environment."""
    return os.environ.get(WAIT_POLICY) or "default (spin, then sleep)"
