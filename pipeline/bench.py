"""`python -m pipeline.bench` (`make bench`): the performance goals as ratios measured in one run, then the baselines.

Goals, for eca_resnet50 at batch 8, 224x224, 2 threads: ONNX Runtime FP32 throughput >= 1.5x PyTorch eager,
and CPU-target INT8 >= 3x ONNX Runtime FP32. The ratios are printed whether or not they are met; this is a
measurement, not a timed test. The artifacts come from the pipeline in --out, so a rerun skips the export
and the calibration.
"""
import argparse
import importlib.util
import json
import runpy
import sys

GOALS = (("ORT FP32 / PyTorch eager", "fp32", "pytorch", 1.5), ("CPU INT8 / ORT FP32", "int8_cpu", "fp32", 3.0))
# The bench scripts live in benchmark/; this driver runs the pipeline first, so it lives beside the pipeline.
EXTRA_BENCHMARKS = ("benchmark.bench_baseline", "benchmark.bench_attention_cost", "benchmark.bench_precision",
                    "benchmark.bench_preprocess", "benchmark.bench_calibration")


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--no-baselines", action="store_true", help="Skip the attention-module baselines, deployed (8 models).")
    parser.add_argument("--no-extra", action="store_true", help="Skip " + ", ".join(EXTRA_BENCHMARKS) + ".")
    parser.add_argument("--force", action="store_true")
    return parser.parse_args(argv)


def _throughputs(benchmark: dict, batch: int) -> dict:
    """The latency record at ``batch`` keyed like the pipeline's artifacts (pytorch, fp32, int8_cpu, ...)."""
    by_path = {}
    for entry in [benchmark["reference"]] + benchmark["artifacts"]:
        timing = next((t for t in entry["timings"] if t["batch_size"] == batch), None)
        by_path[entry["path"] or "pytorch"] = timing["latency"] if timing else None
    return by_path


def baseline_line(benchmark: dict, batch: int):
    """PyTorch's p50 alone and in turns with the other backends (benchmark-engine times both), or None."""
    check = (benchmark.get("baseline") or {}).get(str(batch))
    if not check:
        return None
    return "PyTorch eager p50: {:.2f} ms alone, {:.2f} ms in turns with the other backends ({:.2f}x{})".format(
        check["alone_p50_ms"], check["interleaved_p50_ms"], check["ratio"],
        "; disturbed: no speed-up over it is given" if check["disturbed"] else "")


def goal_lines(report: dict, batch: int):
    rates = _throughputs(report["benchmark"], batch)
    keyed = {"pytorch": rates.get("pytorch")}
    keyed.update({key: rates.get(path) for key, path in report["artifacts"].items()})
    check = (report["benchmark"].get("baseline") or {}).get(str(batch)) or {}
    lines = [line for line in [baseline_line(report["benchmark"], batch)] if line]
    for label, numerator, denominator, goal in GOALS:
        top, bottom = keyed.get(numerator), keyed.get(denominator)
        if not top or not bottom:
            lines.append("{}: not measured".format(label))
            continue
        if "pytorch" in (numerator, denominator) and check.get("disturbed"):
            lines.append("{}: not given (PyTorch's baseline was disturbed in this run; rerun)".format(label))
            continue
        ratio = top["images_per_s"] / bottom["images_per_s"]  # both at p50 latency
        unstable = " (timing unstable: p90/p50 above 1.5, rerun)" if top["unstable"] or bottom["unstable"] else ""
        lines.append("{}: {:.2f}x ({:.1f} vs {:.1f} img/s at p50; goal >= {:.1f}x: {}){}".format(
            label, ratio, top["images_per_s"], bottom["images_per_s"], goal, "met" if ratio >= goal else "NOT met",
            unstable))
    return lines


def main(argv=None) -> int:
    args = _parse(argv)
    from benchmark.attention_baselines import BASELINES_HEADING
    from pipeline.run import PipelineConfig, run_pipeline
    from deploy.errors import CheckFailedError, UserError

    config = PipelineConfig(out=args.out, batch_sizes=(args.batch,), threads=args.threads, warmup=2,
                            iterations=args.iterations, baselines=not args.no_baselines, force=args.force,
                            progress=sys.stderr.isatty())
    try:
        result = run_pipeline(config, echo=lambda line: print(line, file=sys.stderr))
    except (UserError, CheckFailedError) as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return exc.exit_code
    with open(result.report["json"], "r", encoding="utf-8") as handle:
        report = json.load(handle)
    env = report["benchmark"]["environment"]
    print("Performance goals: {} at batch {}, {}x{}, {} threads on {} ({} cores usable)".format(
        config.arch, args.batch, 224, 224, args.threads, env["cpu"], env["cpu_cores"]))
    for line in goal_lines(report, args.batch):
        print("  " + line)
    print()
    if report.get("baselines"):
        with open(result.report["markdown"], "r", encoding="utf-8") as handle:
            text = handle.read()
        start = text.find(BASELINES_HEADING)
        end = text.find("\n## ", start + 1)
        print(text[start:end if end > 0 else None].strip())
        print()
    print("full report: {}".format(result.report["markdown"]))
    if not args.no_extra:
        for module in EXTRA_BENCHMARKS:
            if importlib.util.find_spec(module) is not None:
                print("\n== {} ==".format(module), flush=True)
                sys.argv = [module]  # its own defaults, not this script's options
                runpy.run_module(module, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
