"""Is PyTorch's speed in benchmark-engine its own? ONNX Runtime's thread spinning on and off, side by side.

Run: ``python -m benchmark.bench_baseline [--arch eca_resnet18] [--input-size 64] [--batch-sizes 1 8] [--json]``

One model exported with random weights (speed does not depend on them), measured in two processes one after
the other: PyTorch's OpenMP threads spinning (libgomp's default, and this project's) and waiting passively
(OMP_WAIT_POLICY=PASSIVE, the user's choice, benchmark/openmp.py). In each, per batch size and per setting of ONNX
Runtime's ``session.intra_op.allow_spinning`` ("1", its default and this project's before; "0", now), in
``--repeats`` rounds: PyTorch timed alone, ONNX Runtime timed alone, then the two in turns as benchmark-engine
times them. Before issue 28 both spun; now ORT does not, PyTorch as its user sets it. It prints medians over the
rounds: how far PyTorch in turns is from PyTorch alone, and how far the speed-up measured in turns is from the ratio
of the two alone.
A measurement, not a test; the absolute times of a shared machine move, the ratios within one round less.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List

import numpy as np

SETTINGS = (("ORT spinning", True), ("ORT passive", False))
POLICIES = (("", "torch spinning"), ("PASSIVE", "torch passive"))


def _p50(seconds: List[float]) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000.0, 50))


def measure(arch: str, input_size: int, batch_sizes, threads: int, iterations: int, repeats: int,
            directory: str) -> Dict[str, object]:
    """{"rows": [...]}: per batch size and setting, the medians over ``repeats`` rounds of each p50 (ms)."""
    import models
    from deploy.runners import OnnxRuntimeRunner
    from deploy.runners.execution import time_alone, time_interleaved, warm_up
    from exporter import export_model
    from models.torch_runner import TorchRunner

    path = os.path.join(directory, arch + ".onnx")
    export_model(arch, path, num_classes=10, input_size=input_size, parity_batch_sizes=(1,))
    model, _ = models.load_model(arch, None, num_classes=10)
    torch_runner = TorchRunner(model, threads=threads).activate()
    sessions = {spin: OnnxRuntimeRunner(path, threads=threads, allow_spinning=spin).activate()
                for _, spin in SETTINGS}
    rows = []
    try:
        for batch_size in batch_sizes:
            x = np.random.RandomState(0).randn(batch_size, 3, input_size, input_size).astype(np.float32)
            samples = {label: {k: [] for k in ("torch_alone", "ort_alone", "torch_turns", "ort_turns")}
                       for label, _ in SETTINGS}
            for _ in range(repeats):  # the settings take turns too, so a slow spell hits both
                for label, spin in SETTINGS:
                    ort_runner, seen = sessions[spin], samples[label]
                    seen["torch_alone"].append(_p50(time_alone(torch_runner, x, iterations, warmup=2)))
                    seen["ort_alone"].append(_p50(time_alone(ort_runner, x, iterations, warmup=2)))
                    warm_up(ort_runner, x)
                    (torch_wall, _), (ort_wall, _) = time_interleaved([torch_runner, ort_runner], [x, x], iterations,
                                                                      warmup=1)
                    seen["torch_turns"].append(_p50(torch_wall))
                    seen["ort_turns"].append(_p50(ort_wall))
            for label, _ in SETTINGS:
                median = {k: float(np.median(v)) for k, v in samples[label].items()}
                true_speedup = median["torch_alone"] / median["ort_alone"]
                shown_speedup = median["torch_turns"] / median["ort_turns"]
                rows.append(dict(median, batch_size=batch_size, setting=label,
                                 torch_turns_over_alone=median["torch_turns"] / median["torch_alone"],
                                 ort_turns_over_alone=median["ort_turns"] / median["ort_alone"],
                                 speedup_alone=true_speedup, speedup_in_turns=shown_speedup,
                                 speedup_error=shown_speedup / true_speedup))
    finally:
        torch_runner.deactivate()
        for runner in sessions.values():
            runner.deactivate()
    return {"rows": rows}


def format_report(result: Dict[str, object]) -> str:
    lines = ["{arch} at {input_size}x{input_size}, {threads} threads, {iterations} timed calls per block, medians "
             "of {repeats} rounds; load average {load} before the run".format(**result),
             "{:<28} {:>5} {:>11} {:>11} {:>7} {:>9} {:>9} {:>7} {:>8} {:>9} {:>7}".format(
                 "setting", "batch", "torch alone", "torch turns", "ratio", "ORT alone", "ORT turns", "ratio",
                 "x alone", "x turns", "error")]
    for row in result["rows"]:
        lines.append("{:<28} {:>5} {:>11.2f} {:>11.2f} {:>6.2f}x {:>9.2f} {:>9.2f} {:>6.2f}x {:>7.2f}x {:>8.2f}x "
                     "{:>6.2f}x".format(
                         row["setting"], row["batch_size"], row["torch_alone"], row["torch_turns"],
                         row["torch_turns_over_alone"], row["ort_alone"], row["ort_turns"], row["ort_turns_over_alone"],
                         row["speedup_alone"], row["speedup_in_turns"], row["speedup_error"]))
    lines.append("before: torch spinning, ORT spinning; now, by default: torch spinning, ORT passive. p50 ms; "
                 "ratio: p50 in turns / alone (goal for PyTorch <= 1.3x); x alone: PyTorch alone / ORT alone, "
                 "the true speed-up; x turns: what timing in turns shows; error: x turns / x alone (goal within 25%)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.bench_baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="eca_resnet18")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one process's rows, as JSON
    args = parser.parse_args(argv)
    load = "{:.2f}".format(os.getloadavg()[0]) if hasattr(os, "getloadavg") else "unknown"
    if args.child:
        with tempfile.TemporaryDirectory() as directory:
            print(json.dumps(measure(args.arch, args.input_size, args.batch_sizes, args.threads, args.iterations,
                                     args.repeats, directory)))
        return 0
    result = {"rows": []}
    for policy, label in POLICIES:  # the policy is read when torch loads: one process each
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if policy:
            env["OMP_WAIT_POLICY"] = policy
        command = [sys.executable, "-m", "benchmark.bench_baseline", "--child"] + [
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--json"]
        proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, universal_newlines=True, check=True)
        rows = json.loads(proc.stdout.strip().splitlines()[-1])["rows"]
        result["rows"] += [dict(row, setting="{}, {}".format(label, row["setting"])) for row in rows]
    result["rows"].sort(key=lambda row: row["batch_size"])
    result.update(arch=args.arch, input_size=args.input_size, threads=args.threads, iterations=args.iterations,
                  repeats=args.repeats, load=load)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    code = main()
    if code:  # `make bench` runs this module with runpy, in its own process: exit only to report a failure
        sys.exit(code)
