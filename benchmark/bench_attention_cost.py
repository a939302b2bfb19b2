"""What the attention modules cost once deployed: ONNX Runtime CPU latency of SE-, CBAM- and ECA-ResNet-50 as
ratios to ResNet-50, FP32 and CPU-target INT8, batch 1 and 8, all measured in one run (the paper's comparison, deployed).

Run: ``python -m benchmark.bench_attention_cost [--threads 2] [--batches 1 8] [--rounds 7] [--profile] [--json]``

FP32 models run in both export forms of exporter/attention_forms.py (``nchwc``, the fast one on x86, and
``lean``); the INT8 models are what ``calibrate --target cpu`` makes from the lean form, calibrated on the photos
in deploy/samples. Weights are random (seed 0): speed does not depend on them. Exports and INT8 models are
kept in --out, so a rerun only measures (--force rebuilds).

Hygiene for a shared machine: the models of one precision and batch take turns within every round (the order
reversing each round), so a slow spell hits them alike; the table gives medians and the ratios to ResNet-50
of the same precision and batch (of the medians, and of the fastest runs, which a busy neighbour disturbs
least), which are what to compare, and the load average before and after. --profile
adds ONNX Runtime's per-op profile (per node the fastest of the profiled runs, summed per op type) and what
each attention model spends beyond ResNet-50, per op type. A measurement, not a test.
"""
import argparse
import json
import os
import re
import sys
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np

ARCHES = ("resnet50", "se_resnet50", "cbam_resnet50", "eca_resnet50")
FORMS = ("nchwc", "lean")
INT8_FORM = "lean"  # measured: the nchwc form's extra convs get quantized and ran 45 % slower in INT8
DEFAULT_OUT = os.path.join("out", "bench_attention")


class Variant:
    """One model file to time: an arch in a precision and export form."""

    def __init__(self, arch: str, precision: str, form: str, path: str):
        self.arch, self.precision, self.form, self.path = arch, precision, form, path

    @property
    def label(self) -> str:
        return "{} {} {}".format(self.arch, self.precision, self.form)


# -- building the models ------------------------------------------------------------------------------------

def build_variants(out: str, arches: Sequence[str], input_size: int, int8: bool, force: bool,
                   progress: bool, model_options: Optional[dict] = None) -> List[Variant]:
    """Export each arch (lean), derive its nchwc form and its CPU INT8 model; reuse files already in ``out``."""
    from models import get_entry
    os.makedirs(out, exist_ok=True)
    variants = []
    for arch in arches:
        lean = os.path.join(out, "{}.lean.onnx".format(arch))
        if force or not os.path.isfile(lean):
            _export(arch, lean, input_size, model_options or {})
        forms = FORMS if get_entry(arch).attention != "none" else ("lean",)  # no gate: both forms are one graph
        for form in forms:
            path = lean if form == "lean" else _derive_form(lean, form, force)
            variants.append(Variant(arch, "fp32", form, path))
        if int8:
            variants.append(Variant(arch, "int8", INT8_FORM, _int8_cpu(lean, out, force, progress)))
    return variants


def _export(arch: str, path: str, input_size: int, model_options: dict) -> None:
    from deploy.errors import CheckFailedError
    from exporter import export_model
    result = export_model(arch, path, input_size=input_size, parity_batch_sizes=(1,), attention_form="lean",
                          **model_options)
    if not result.parity:
        os.remove(path)
        raise CheckFailedError("{}: ONNX Runtime differs from PyTorch (max abs error {:.3g})".format(
            arch, result.parity.max_abs_error))


def _derive_form(lean_path: str, form: str, force: bool) -> str:
    """The ``form`` graph of a lean export, checked to give the lean model's outputs."""
    import onnx
    from deploy.fileio import atomic_path
    from exporter.attention_forms import convert
    path = lean_path.replace(".lean.onnx", ".{}.onnx".format(form))
    if force or _stale(path, lean_path):
        model = onnx.load(lean_path)
        convert(model, form)
        onnx.checker.check_model(model, full_check=True)
        with atomic_path(path) as tmp:
            onnx.save(model, tmp)
        _check_same_outputs(lean_path, path)
    return path


def _check_same_outputs(reference: str, candidate: str) -> None:
    from deploy.errors import CheckFailedError
    from deploy.runners import OnnxRuntimeRunner
    from exporter.parity import FP32_ATOL, FP32_RTOL, sample_batch
    from deploy.metadata import read_model_info
    from deploy.runners.execution import INPUT_NAME, OUTPUT_NAME
    batch = sample_batch(read_model_info(reference).preprocess, 2)
    outputs = []
    for path in (reference, candidate):
        with OnnxRuntimeRunner(path) as runner:
            outputs.append(runner.infer({INPUT_NAME: batch})[OUTPUT_NAME])
    if not np.allclose(outputs[1], outputs[0], atol=FP32_ATOL, rtol=FP32_RTOL):
        raise CheckFailedError("{} differs from {} by {:.3g}".format(
            candidate, reference, float(np.abs(outputs[1] - outputs[0]).max())))


def _stale(path: str, source: str) -> bool:
    return not os.path.isfile(path) or os.path.getmtime(path) < os.path.getmtime(source)


def _int8_cpu(lean_path: str, out: str, force: bool, progress: bool) -> str:
    from calibration.api import calibrate
    from data.datasets import load_dataset
    from deploy.images import SAMPLES_DIR
    from deploy.metadata import read_model_info
    path = lean_path.replace(".onnx", ".int8.cpu.onnx")
    if force or _stale(path, lean_path):
        spec = read_model_info(lean_path).preprocess
        images = load_dataset(SAMPLES_DIR, spec, cache_dir=os.path.join(out, "cache"), progress=progress)
        result = calibrate(lean_path, targets=("cpu",), images=images, progress=progress, fp16=False)
        path = result.int8_models["cpu"]
    return path


# -- timing -------------------------------------------------------------------------------------------------

def session_settings(threads: int, optimization: str, arena: bool) -> Dict[str, object]:
    return {"intra_op_threads": threads, "inter_op_threads": 1, "graph_optimization_level": optimization,
            "enable_cpu_mem_arena": arena, "execution_mode": "sequential", "provider": "CPUExecutionProvider"}


def time_group(variants: Sequence[Variant], batch: int, settings: dict, rounds: int, per_round: int,
               warmup: int = 2) -> Dict[str, List[float]]:
    """Seconds per run for each variant; within a round every variant runs ``per_round`` times, in an order
    that reverses each round (A B C, C B A, ...)."""
    from deploy.runners import OnnxRuntimeRunner
    from deploy.runners.execution import input_size_of, time_interleaved
    size = input_size_of(variants[0].path)
    x = np.random.RandomState(0).rand(batch, 3, size, size).astype(np.float32)
    runners = []
    try:
        for v in variants:
            runner = OnnxRuntimeRunner(v.path, threads=settings["intra_op_threads"],
                                       graph_optimization_level=settings["graph_optimization_level"],
                                       enable_mem_arena=settings["enable_cpu_mem_arena"], name=v.label)
            runners.append(runner.activate())
        clocks = time_interleaved(runners, [x] * len(runners), rounds, warmup, per_round)
        return {v.label: wall for v, (wall, _) in zip(variants, clocks)}
    finally:
        for runner in runners:
            runner.deactivate()


def summarize(variants: Sequence[Variant], times: Dict[str, List[float]], batch: int) -> List[dict]:
    """Each variant's latency record, with the ratio of its p50 (and of its fastest run) to the first
    variant's (the baseline arch)."""
    from deploy.runners.execution import latency_record
    records = {v.label: latency_record(times[v.label], batch) for v in variants}
    first = records[variants[0].label]
    return [dict(records[v.label], arch=v.arch, precision=v.precision, form=v.form, batch=batch, path=v.path,
                 ratio_to_baseline=records[v.label]["p50_ms"] / first["p50_ms"],
                 min_ratio_to_baseline=records[v.label]["min_ms"] / first["min_ms"]) for v in variants]


# -- profiling ----------------------------------------------------------------------------------------------

class Profile:
    """ORT's per-node kernel times of one model: per node the fastest of the profiled runs, so a load spike in
    one run does not count. Node names are normalized (ORT's ``_token_<n>`` suffixes dropped) so the nodes a
    model shares with the baseline (its backbone) can be matched by name."""

    def __init__(self, times: Dict[str, float], op_types: Dict[str, str]):
        self.times, self.op_types = times, op_types

    @property
    def total(self) -> float:
        return sum(self.times.values())

    def by_op(self, nodes=None) -> Dict[str, float]:
        totals: Dict[str, float] = {}
        for node in self.times if nodes is None else nodes:
            totals[self.op_types[node]] = totals.get(self.op_types[node], 0.0) + self.times[node]
        return OrderedDict(sorted(totals.items(), key=lambda kv: -kv[1]))

    def beyond(self, baseline: "Profile") -> Dict[str, object]:
        """What this model spends on nodes the baseline does not have, minus the baseline's nodes it lacks (e.g.
        a conv with the residual Add fused in): the attention cost, free of the backbone's run-to-run noise."""
        own = [n for n in self.times if n not in baseline.times]
        missing = [n for n in baseline.times if n not in self.times]
        extra = sum(self.times[n] for n in own) - sum(baseline.times[n] for n in missing)
        return {"extra_ms": extra, "extra_pct": 100.0 * extra / baseline.total, "ops": self.by_op(own),
                "baseline_only_ms": sum(baseline.times[n] for n in missing)}


def profile_model(variant: Variant, batch: int, settings: dict, runs: int) -> Profile:
    import onnxruntime as ort
    from deploy.runners import OnnxRuntimeRunner
    from deploy.runners.execution import INPUT_NAME, input_size_of
    runner = OnnxRuntimeRunner(variant.path, threads=settings["intra_op_threads"],
                               graph_optimization_level=settings["graph_optimization_level"],
                               enable_mem_arena=settings["enable_cpu_mem_arena"])
    options = runner.session_options()
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(os.path.dirname(os.path.abspath(variant.path)), "profile")
    session = ort.InferenceSession(variant.path, options, providers=["CPUExecutionProvider"])
    size = input_size_of(variant.path)
    x = np.random.RandomState(0).rand(batch, 3, size, size).astype(np.float32)
    for _ in range(runs + 1):  # the first run warms up and is dropped below
        session.run(None, {INPUT_NAME: x})
    trace = session.end_profiling()
    with open(trace, "r", encoding="utf-8") as handle:
        events = json.load(handle)
    os.remove(trace)
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(kernels) // (runs + 1)
    times, op_types = {}, {}
    for start in range(per_run, per_run * (runs + 1), per_run):
        seen: Dict[str, int] = {}
        for event in kernels[start:start + per_run]:
            # Generated names ("Transpose_token_181") differ between models: drop the number, and tell apart
            # the nodes that then share a name by their order of execution.
            name = re.sub(r"_token_\d+", "", event["name"][:-len("_kernel_time")])
            seen[name] = seen.get(name, -1) + 1
            node = "{}#{}".format(name, seen[name]) if seen[name] else name
            times[node] = min(times.get(node, float("inf")), event["dur"] / 1e3)
            op_types[node] = event["args"]["op_name"]
    return Profile(times, op_types)


# -- report -------------------------------------------------------------------------------------------------

def format_report(result: dict) -> str:
    settings = result["session"]
    lines = ["Attention cost in ONNX Runtime {} CPU, {}x{}, {} threads, graph optimization {}, memory arena {}".format(
        result["onnxruntime"], result["input_size"], result["input_size"], settings["intra_op_threads"],
        settings["graph_optimization_level"], "on" if settings["enable_cpu_mem_arena"] else "off"),
        "CPU: {} ({} cores usable); load average {:.2f} before, {:.2f} after".format(
            result["cpu"], result["cpu_cores"], result["load_before"], result["load_after"]),
        "",
        "{:<9} {:>5}  {:<15} {:<6} {:>10} {:>9} {:>9} {:>8}  {}".format(
            "precision", "batch", "model", "form", "p50 ms", "ratio", "min ratio", "p90/p50",
            "(to {}, same precision and batch)".format(result["baseline"]))]
    for row in result["rows"]:
        lines.append("{:<9} {:>5}  {:<15} {:<6} {:>10.2f} {:>8.3f}x {:>8.3f}x {:>8.2f}{}".format(
            row["precision"], row["batch"], row["arch"], row["form"], row["p50_ms"], row["ratio_to_baseline"],
            row["min_ratio_to_baseline"], row["spread"], " unstable" if row["unstable"] else ""))
    if result.get("profiles"):
        lines += ["", "ORT profile (kernel time per node, fastest of the profiled runs): what each model spends on "
                  "nodes that {0} does not have, as % of {0}'s kernel time".format(result["baseline"])]
    for entry in result.get("profiles", []):
        beyond = entry["beyond_baseline"]
        if beyond is None:
            lines.append("{} {} batch {}: {:.1f} ms in kernels".format(
                entry["arch"], entry["precision"], entry["batch"], entry["kernel_ms"]))
            continue
        lines.append("{} {} {} batch {}: {:+.1f} %  ({})".format(
            entry["arch"], entry["precision"], entry["form"], entry["batch"], beyond["extra_pct"],
            ", ".join("{} {:.2f}".format(k, v) for k, v in beyond["ops"].items() if v >= 0.01)
            + ("; minus {:.2f} ms of fused baseline nodes".format(beyond["baseline_only_ms"])
               if beyond["baseline_only_ms"] >= 0.01 else "")))
    if result["load_before"] > settings["intra_op_threads"] or result["load_after"] > settings["intra_op_threads"]:
        lines.append("")
        lines.append("note: the machine was loaded (load average above the thread count); trust the ratios, "
                     "not the absolute times, and rerun if they look odd")
    return "\n".join(lines)


def run(args) -> dict:
    import onnxruntime
    from benchmark.environment import cpu_count, cpu_model
    progress = sys.stderr.isatty() and not args.json
    model_options = {"stem_width": args.stem_width} if args.stem_width else {}
    variants = build_variants(args.out, args.arches, args.input_size, not args.no_int8, args.force, progress,
                              model_options)
    settings = session_settings(args.threads, args.optimization, not args.no_arena)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    rows, profiles = [], []
    for precision in ("fp32", "int8"):
        group = [v for v in variants if v.precision == precision]
        if not group:
            continue
        for batch in args.batches:
            per_round = max(1, args.per_round if batch == 1 else args.per_round // 4)
            times = time_group(group, batch, settings, args.rounds, per_round)
            rows.extend(summarize(group, times, batch))
            if args.profile:
                profiles.extend(_profiles(group, batch, settings, args.profile_runs))
    return {"baseline": args.arches[0], "input_size": args.input_size, "onnxruntime": onnxruntime.__version__,
            "cpu": cpu_model(), "cpu_cores": cpu_count(), "session": settings, "load_before": load_before,
            "load_after": os.getloadavg()[0], "seconds": time.perf_counter() - start, "rows": rows,
            "profiles": profiles}


def _profiles(group: Sequence[Variant], batch: int, settings: dict, runs: int) -> List[dict]:
    """Per-op profiles of ``group``; the first variant is the baseline the others are compared with."""
    entries, baseline = [], None
    for variant in group:
        profile = profile_model(variant, batch, settings, runs)
        baseline = baseline or profile
        entries.append({"arch": variant.arch, "precision": variant.precision, "form": variant.form, "batch": batch,
                        "kernel_ms": profile.total, "ops": profile.by_op(),
                        "beyond_baseline": profile.beyond(baseline) if profile is not baseline else None})
    return entries


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmark.bench_attention_cost",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="Where the models are kept between runs.")
    parser.add_argument("--arches", nargs="+", default=list(ARCHES), help="Zoo names; the first is the baseline.")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--stem-width", type=int, help="Narrow models (tests); default: the real width.")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--optimization", choices=("all", "extended", "basic", "disable"), default="all",
                        help="ORT graph optimization level; the nchwc form needs 'all'.")
    parser.add_argument("--no-arena", action="store_true", help="Disable ORT's CPU memory arena.")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--per-round", type=int, default=8, help="Runs per round at batch 1 (a quarter of it at "
                                                                   "larger batches).")
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--profile", action="store_true", help="Add ORT's per-op profile of every model.")
    parser.add_argument("--profile-runs", type=int, default=5)
    parser.add_argument("--force", action="store_true", help="Rebuild the models in --out.")
    parser.add_argument("--json", action="store_true", help="Print the result as JSON.")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from deploy.errors import CheckFailedError, UserError
    args = parse_args(argv)
    try:
        result = run(args)
    except (UserError, CheckFailedError) as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    code = main()
    if code:
        sys.exit(code)
