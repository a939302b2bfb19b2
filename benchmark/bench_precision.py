"""CPU speed of FP32, FP16 and the INT8 models of both targets, as ratios to FP32 measured in one run.

Run: ``python -m benchmark.bench_precision [--arch eca_resnet50] [--batch 8] [--threads 2] [--json]``

The model is exported with random weights (the speed does not depend on them) and calibrated on the photos
in deploy/samples. Every model runs in ONNX Runtime's CPU provider with the same session settings; the rounds
interleave the models, so a slow spell of a shared machine hits all of them alike. A measurement, not a test.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np

VARIANTS = ("fp32", "fp16", "int8_tensorrt", "int8_cpu")


def build_models(directory: str, arch: str, input_size: int, progress: bool) -> Dict[str, str]:
    """Export ``arch`` and derive the FP16 and INT8 models: {variant: path}."""
    from calibration.api import calibrate
    from data.datasets import load_dataset
    from deploy.images import SAMPLES_DIR
    from deploy.metadata import read_model_info
    from exporter import export_model

    fp32 = os.path.join(directory, arch + ".onnx")
    export_model(arch, fp32, input_size=input_size, parity_batch_sizes=(1,))
    spec = read_model_info(fp32).preprocess
    images = load_dataset(SAMPLES_DIR, spec, cache_dir=os.path.join(directory, "cache"), progress=progress)
    result = calibrate(fp32, targets=("tensorrt", "cpu"), images=images, progress=progress)
    return {"fp32": fp32, "fp16": result.fp16_model, "int8_tensorrt": result.int8_models["tensorrt"],
            "int8_cpu": result.int8_models["cpu"]}


def time_models(paths: Dict[str, str], batch: int, threads: int, rounds: int, per_round: int,
                warmup: int = 2) -> Dict[str, List[float]]:
    """Seconds per batch for each model, ``rounds`` x ``per_round`` runs, the models taking turns."""
    from deploy.runners import OnnxRuntimeRunner
    from deploy.runners.execution import input_size_of, time_interleaved

    size = input_size_of(paths["fp32"])
    x = np.random.RandomState(0).randn(batch, 3, size, size).astype(np.float32)
    runners = {name: OnnxRuntimeRunner(path, threads=threads).activate() for name, path in paths.items()}
    try:
        clocks = time_interleaved(list(runners.values()), [x] * len(runners), rounds, warmup, per_round)
        return {name: wall for name, (wall, _) in zip(runners, clocks)}
    finally:
        for runner in runners.values():
            runner.deactivate()


def summarize(times: Dict[str, List[float]], batch: int) -> Dict[str, dict]:
    """The latency record of each model, plus its speed-up over FP32 (a ratio of p50 latencies)."""
    from deploy.runners.execution import latency_record

    rows = {name: latency_record(seconds, batch) for name, seconds in times.items()}
    for row in rows.values():
        row["speedup_vs_fp32"] = rows["fp32"]["p50_ms"] / row["p50_ms"]
    return rows


def environment(threads: int) -> Dict[str, object]:
    import onnxruntime
    from benchmark.environment import cpu_count, cpu_model
    return {"cpu": cpu_model(), "cpu_cores": cpu_count(), "threads": threads,
            "onnxruntime": onnxruntime.__version__, "python": sys.version.split()[0]}


def format_report(result: Dict[str, object]) -> str:
    env = result["environment"]
    lines = ["{} at batch {}, {}x{}, {} threads, ONNX Runtime {} CPU on {} ({} cores usable)".format(
        result["arch"], result["batch"], result["input_size"], result["input_size"], env["threads"],
        env["onnxruntime"], env["cpu"], env["cpu_cores"]),
        "{:<15} {:>9} {:>9} {:>9} {:>10} {:>8}".format("model", "p50 ms", "p90 ms", "img/s", "vs FP32", "p90/p50")]
    for name in VARIANTS:
        row = result["results"][name]
        lines.append("{:<15} {:>9.1f} {:>9.1f} {:>9.1f} {:>9.2f}x {:>8.2f}{}".format(
            name, row["p50_ms"], row["p90_ms"], row["images_per_s"], row["speedup_vs_fp32"], row["spread"],
            " unstable" if row["unstable"] else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.bench_precision", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="eca_resnet50")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    progress = sys.stderr.isatty() and not args.json
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as directory:
        start = time.perf_counter()
        paths = build_models(directory, args.arch, args.input_size, progress)
        prepared = time.perf_counter() - start
        times = time_models(paths, args.batch, args.threads, args.rounds, args.per_round)
    result = {"arch": args.arch, "batch": args.batch, "input_size": args.input_size,
              "environment": environment(args.threads), "prepare_seconds": prepared,
              "results": summarize(times, args.batch)}
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    code = main()
    if code:  # `make bench` runs this module in its own process; exit only to report a failure
        sys.exit(code)
