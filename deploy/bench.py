"""Time a bundle's models and engines on this device: ``python3 -m deploy.bench [MODELS_OR_ENGINES...]``.

trtexec's figures without torch: per model and batch size, throughput (images/s) and latency mean, min, max and
p50/p90/p95/p99 of end-to-end calls (host to host), after a warm-up in milliseconds and over a duration in
seconds (or a fixed number of calls). TensorRT engines also get the GPU compute time alone, between CUDA events
around the execution. The device is recorded with the numbers: on a Jetson its nvpmodel power mode and whether
jetson_clocks pinned the clocks, both only read, never changed.

It only times, on random inputs: deploy.check is the gate that says whether a model still gives PyTorch's answers.
Torch-free and Python 3.8-compatible: numpy, plus onnxruntime and/or TensorRT, imported only when used.
"""
import argparse
import importlib.util
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .cliutil import add_providers_argument, note, run_main, runner_label
from .schema import dumps_strict
from .errors import UserError
from .runners.execution import (DEFAULT_BATCH_SIZES, DEFAULT_ITERATIONS, Clocks, artifact_kind, fixed_batch_size,
                                infer_batch, input_name, latency_record)
from .validate import (MAX_BATCH, MAX_ITERATIONS, THREADS_PER_CORE, check_bound, check_finite_number,
                       check_threads, parse_int_field)

DEFAULT_WARM_UP_MS = 200.0   # trtexec's --warmUp
DEFAULT_DURATION_S = 3.0     # trtexec's --duration
MIN_DURATION_RUNS = DEFAULT_ITERATIONS  # trtexec's default --iterations: a duration never times fewer calls
MAX_BATCH_SIZES = 16
MAX_WARM_UP_MS = 60000.0
MIN_DURATION_S, MAX_DURATION_S = 0.01, 600.0  # 600 s: MLPerf's minimum run, the longest anyone needs
INPUT_SEED = 0
NOT_A_JETSON = "not a Jetson"


@dataclass(frozen=True)
class BenchOptions:
    """How every model is timed; ``iterations`` replaces ``duration_s`` when given."""

    batch_sizes: Tuple[int, ...] = DEFAULT_BATCH_SIZES
    warm_up_ms: float = DEFAULT_WARM_UP_MS
    duration_s: float = DEFAULT_DURATION_S
    iterations: Optional[int] = None
    threads: Optional[int] = None
    providers: Tuple[str, ...] = ("cpu",)
    cuda_graph: bool = False


@dataclass
class BenchRow:
    """One model at one batch size: timed, or skipped with the reason."""

    model: str
    kind: str                     # "onnx" or "engine"
    precision: str
    batch_size: Optional[int]
    runner: Dict[str, object] = field(default_factory=dict)
    skipped: Optional[str] = None
    warm_up_runs: int = 0
    wall_s: float = 0.0           # how long the timed calls took together, loop included
    throughput_images_per_s: Optional[float] = None   # batch_size / mean latency
    latency: Optional[Dict[str, object]] = None       # end to end per call; the execution core's record
    gpu_compute: Optional[Dict[str, object]] = None   # TensorRT: the engine alone, between CUDA events


# -- options -------------------------------------------------------------------------------------------------

def _integer(flag: str, text) -> int:
    """The option's text as a positive integer ("x", "1e3" and "0" are one line naming the flag); the shared
    bounds of deploy.validate are checked by the caller."""
    return parse_int_field(flag, text, minimum=1)


def parse_batch_sizes(text: str) -> Tuple[int, ...]:
    """"1,8" -> (1, 8): distinct, in the order given, each from 1 to MAX_BATCH."""
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    if not parts:
        raise UserError("--batch-sizes needs at least one batch size, e.g. 1,8")
    if len(parts) > MAX_BATCH_SIZES:
        raise UserError("--batch-sizes takes at most {} sizes, got {}".format(MAX_BATCH_SIZES, len(parts)))
    sizes = [check_bound("--batch-sizes", _integer("--batch-sizes", part), MAX_BATCH) for part in parts]
    return tuple(sorted(set(sizes), key=sizes.index))


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """The checked options; every bound is a UserError naming its flag."""
    return BenchOptions(
        batch_sizes=parse_batch_sizes(args.batch_sizes),
        warm_up_ms=check_finite_number("--warm-up", args.warm_up, 0.0, MAX_WARM_UP_MS),
        duration_s=check_finite_number("--duration", args.duration, MIN_DURATION_S, MAX_DURATION_S),
        iterations=None if args.iterations is None else check_bound(
            "--iterations", _integer("--iterations", args.iterations), MAX_ITERATIONS),
        threads=None if args.threads is None else check_threads("--threads", _integer("--threads", args.threads)),
        providers=tuple(args.providers),
        cuda_graph=bool(args.cuda_graph))


# -- what to time ----------------------------------------------------------------------------------------------

def find_artifacts(paths: Sequence[str], cwd: str = ".") -> List[str]:
    """The models and engines to time: the paths given (a folder stands for the models and engines in it, as
    deploy.check finds them), or, with none, those of the unpacked bundle in ``cwd``."""
    from .manifest import MANIFEST, read_manifest
    from .check import bundle_artifacts

    if not paths:
        if read_manifest(cwd) is None:
            raise UserError("give ONNX models or TensorRT engines, or run it inside an unpacked bundle (a folder "
                            "with {})".format(MANIFEST))
        paths = [cwd]
    found = []
    for path in paths:
        if os.path.isdir(path):
            inside = bundle_artifacts(path)
            if not inside:
                raise UserError("{} holds no ONNX models or TensorRT engines".format(path))
            found += inside
        elif not os.path.isfile(path):
            raise UserError("no such model or engine: {}".format(path))
        else:
            artifact_kind(path)  # anything else is an error here, before the first model is timed
            found.append(path)
    return found


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def open_runner(path: str, options: BenchOptions):
    """(runner, None), or (None, why it cannot run here)."""
    if artifact_kind(path) == "engine":
        missing = [name for name in ("tensorrt", "polygraphy") if not _importable(name)]
        if missing:
            return None, "{} is not importable here (engines run where TensorRT is installed)".format(
                " and ".join(missing))
        from .runners.tensorrt import TensorRTRunner
        return TensorRTRunner(path, use_cuda_graph=options.cuda_graph, time_compute=True), None
    if not _importable("onnxruntime"):
        return None, "onnxruntime is not installed here (pip install onnxruntime)"
    from .runners.onnxruntime import OnnxRuntimeRunner
    return OnnxRuntimeRunner(path, providers=options.providers, threads=options.threads), None


def batch_sizes_for(runner, requested: Sequence[int]) -> Tuple[List[int], Dict[int, str]]:
    """(batch sizes this model can take, {batch size: why not}): a static model takes its own batch only,
    an engine only the batches of its optimization profile."""
    fixed = fixed_batch_size(runner)
    if fixed:
        skipped = {b: "the model has a static batch of {}".format(fixed) for b in requested if b != fixed}
        return [fixed], skipped
    profile = runner.profile(input_name(runner)) if hasattr(runner, "profile") else None
    if not profile:
        return list(requested), {}
    low, high = profile[0][0], profile[2][0]
    skipped = {b: "outside the engine's profile (batch {} to {})".format(low, high)
               for b in requested if not low <= b <= high}
    return [b for b in requested if b not in skipped], skipped


def random_batch(runner, batch_size: int, input_size: int, raw_pixels: bool) -> np.ndarray:
    """Random inputs in the model's own domain and input dtype: timing does not depend on the values."""
    meta = runner.get_input_metadata()[input_name(runner)]
    rng = np.random.RandomState(INPUT_SEED)
    shape = (batch_size, 3, input_size, input_size)
    values = rng.uniform(0.0, 255.0, shape) if raw_pixels else rng.standard_normal(shape)
    return values.astype(meta.dtype)


# -- timing ----------------------------------------------------------------------------------------------------

def warm_up_for(runner, batch: np.ndarray, name: str, milliseconds: float) -> int:
    """Untimed calls for ``milliseconds`` of wall time, at least one: the first call at a shape pays for
    allocation, kernel selection and graph capture. Returns the number of calls."""
    deadline = time.perf_counter() + milliseconds / 1000.0
    runs = 0
    while runs == 0 or time.perf_counter() < deadline:
        infer_batch(runner, batch, None, name)
        runs += 1
    return runs


def timed_calls(runner, batch: np.ndarray, name: str, options: BenchOptions,
                on_call=None) -> Tuple[List[float], List[float], float]:
    """(wall seconds per call, GPU compute seconds per call or [], wall seconds in all): ``options.iterations``
    calls, or calls until ``options.duration_s`` has passed and at least MIN_DURATION_RUNS were made."""
    clocks = Clocks(runner)
    start = time.perf_counter()
    runs = 0
    while True:
        infer_batch(runner, batch, None, name)
        runs += 1
        if on_call is not None:
            on_call()
        elapsed = time.perf_counter() - start
        if options.iterations is not None:
            if runs >= options.iterations:
                break
        elif (elapsed >= options.duration_s and runs >= MIN_DURATION_RUNS) or runs >= MAX_ITERATIONS:
            break
    return clocks.wall(), clocks.compute(), elapsed


def time_batch(runner, row: BenchRow, input_size: int, raw_pixels: bool, options: BenchOptions,
               on_call=None) -> None:
    """Fill ``row`` with the timing of ``runner`` at ``row.batch_size``; a refused shape skips the row."""
    from .validate import check_batch_memory

    check_batch_memory(row.batch_size, input_size, "--batch-sizes")
    name = input_name(runner)
    batch = random_batch(runner, row.batch_size, input_size, raw_pixels)
    try:
        row.warm_up_runs = warm_up_for(runner, batch, name, options.warm_up_ms)
    except UserError as exc:
        row.skipped = "it did not run: {}".format(str(exc).splitlines()[0])
        return
    wall, compute, row.wall_s = timed_calls(runner, batch, name, options, on_call)
    row.latency = latency_record(wall, row.batch_size)
    row.gpu_compute = latency_record(compute, row.batch_size)
    row.throughput_images_per_s = 1000.0 * row.batch_size / row.latency["mean_ms"]


def bench_artifact(path: str, options: BenchOptions, bar=None) -> List[BenchRow]:
    """The rows of one model or engine: one per batch size, timed or skipped with the reason."""
    from .check import artifact_precision
    from .metadata import read_model_info

    name, kind = os.path.basename(path), artifact_kind(path)
    info = read_model_info(path)
    precision = artifact_precision(path, info)
    runner, missing = open_runner(path, options)
    if runner is None:
        return [BenchRow(name, kind, precision, None, skipped=missing)]
    try:  # one model that does not load here (a stale engine) leaves the others to be timed
        runner.activate()
    except UserError as exc:
        return [BenchRow(name, kind, precision, None, skipped="it did not load: {}".format(str(exc).splitlines()[0]))]
    rows = []
    with runner:
        sizes, skipped = batch_sizes_for(runner, options.batch_sizes)
        for size in sizes:
            if bar is not None:
                bar.set_description("{} batch {}".format(name, size))
            row = BenchRow(name, kind, precision, size)
            time_batch(runner, row, info.preprocess.input_size, info.preprocess.normalize_in_graph, options,
                       bar.update if bar is not None else None)
            rows.append(row)
        rows += [BenchRow(name, kind, precision, size, skipped=why) for size, why in sorted(skipped.items())]
        described = runner.describe()
    for row in rows:
        row.runner = described
    return rows


# -- the report ------------------------------------------------------------------------------------------------

def environment() -> Dict[str, object]:
    """What the numbers depend on besides the model: the machine, the runtimes that ran, the Jetson's power
    mode and clocks (read, never changed)."""
    from .jetson import jetson_report

    runtimes = {name: getattr(sys.modules.get(name), "__version__", None) for name in ("onnxruntime", "tensorrt")}
    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "numpy": np.__version__, "runtimes": {k: v for k, v in runtimes.items() if v},
            "jetson": jetson_report() or NOT_A_JETSON}


def bench(artifacts: Sequence[str], options: BenchOptions, progress: bool = True) -> Dict[str, object]:
    """Time every model and engine (files, as :func:`find_artifacts` gives them); the report ``--json`` prints."""
    from .progress import progress_bar

    rows: List[BenchRow] = []
    with progress_bar(None, "timing", unit="call", enabled=progress) as bar:
        for path in artifacts:
            rows += bench_artifact(path, options, bar)
    notes = []
    for row in rows:
        notes += [str(note) for note in row.runner.get("notes") or [] if str(note) not in notes]
        missing = [p for p in row.runner.get("requested_providers") or [] if p not in row.runner.get("providers")]
        if missing and row.latency:
            message = "ONNX Runtime could not run {} here; {} ran on {}".format(
                ", ".join(missing), row.model, ", ".join(row.runner.get("providers")))
            notes += [message] if message not in notes else []
    return {"settings": settings_dict(options), "environment": environment(),
            "results": [asdict(row) for row in rows], "notes": notes}


def settings_dict(options: BenchOptions) -> Dict[str, object]:
    settings = asdict(options)
    settings.update(batch_sizes=list(options.batch_sizes), providers=list(options.providers),
                    duration_s=None if options.iterations else options.duration_s,
                    inputs="random, seed {} (values do not change the timing)".format(INPUT_SEED),
                    latency="end to end per call, host to host")
    return settings


def _ms(record: Optional[Dict[str, object]], key: str) -> str:
    return "-" if not record else "{:.3f}".format(record[key])


def describe_device(env: Dict[str, object]) -> str:
    jetson = env["jetson"]
    if not isinstance(jetson, dict):
        return "{} ({}), {}".format(env["machine"], env["platform"], jetson)
    parts = [str(jetson.get("model") or "Jetson")]
    mode = jetson.get("power_mode")
    parts.append("nvpmodel {}{}".format(mode.get("name"), " ({})".format(mode["id"]) if "id" in mode else "")
                 if mode else "nvpmodel mode unknown")
    clocks = jetson.get("jetson_clocks")
    parts.append("jetson_clocks {}".format(("on" if clocks["on"] else "off") if clocks else "unknown"))
    return ", ".join(parts)


def format_markdown(report: Dict[str, object]) -> str:
    settings, env = report["settings"], report["environment"]
    span = ("{} calls".format(settings["iterations"]) if settings["iterations"]
            else "{:g} s".format(settings["duration_s"]))
    lines = ["device: {}".format(describe_device(env)),
             "timing: warm-up {:g} ms, then {} per row; latency per call, end to end (host to host); "
             "images/s = batch / mean latency".format(settings["warm_up_ms"], span), "",
             "| model | runner | precision | batch | images/s | mean ms | min ms | p50 ms | p90 ms | p95 ms | "
             "p99 ms | max ms | GPU compute mean ms | GPU compute p99 ms |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    remarks = []  # skipped rows and unstable timings, under the table
    for row in report["results"]:
        if row["skipped"]:
            remarks.append("- {}{}: {}".format(row["model"], "" if row["batch_size"] is None else
                                               " batch {}".format(row["batch_size"]), row["skipped"]))
            continue
        latency, compute = row["latency"], row["gpu_compute"]
        lines.append("| {} | {} | {} | {} | {:.1f} | {} |".format(
            row["model"], runner_label(row["runner"]), row["precision"], row["batch_size"],
            row["throughput_images_per_s"],
            " | ".join(_ms(latency, k) for k in ("mean_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                                                "max_ms"))
            + " | {} | {}".format(_ms(compute, "mean_ms"), _ms(compute, "p99_ms"))))
        if latency["unstable"]:
            remarks.append("- {} batch {}: unstable, p90/p50 {:.2f}; the machine was busy, time it again".format(
                row["model"], row["batch_size"], latency["spread"]))
    if remarks:
        lines += [""] + remarks
    if report["notes"]:
        lines += [""] + ["note: " + message for message in report["notes"]]
    lines += ["", "deploy.bench only times; `python3 -m deploy.check` says whether the answers are right."]
    return "\n".join(lines) + "\n"


# -- the command -----------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    from .fileio import write_text
    from .metadata import sidecar_path
    from .validate import check_output_file, check_outputs_spare_inputs

    options = options_from_args(args)
    artifacts = find_artifacts(args.models)
    if args.markdown:
        sidecars = [sidecar_path(path) for path in artifacts if os.path.exists(sidecar_path(path))]
        check_outputs_spare_inputs([("--markdown", args.markdown)], [("MODELS_OR_ENGINES", artifacts + sidecars)])
        check_output_file(args.markdown, "--markdown file")
    report = bench(artifacts, options, progress=not args.json)
    if not any(row["latency"] for row in report["results"]):
        raise UserError("nothing could be timed here: {}".format(
            "; ".join("{}: {}".format(row["model"], row["skipped"]) for row in report["results"])))
    text = format_markdown(report)
    if args.markdown:
        write_text(args.markdown, text)
    if args.json:
        print(dumps_strict(report, note, default=str))
    else:
        sys.stdout.write(text)
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m deploy.bench", description=__doc__.split("\n\n")[0],
        epilog="deploy.bench only times, on random inputs; `python3 -m deploy.check` is the correctness gate. "
               "Timing runs one model at a time: close other work first, and on a Jetson state the power mode "
               "(it is recorded, never changed).")
    parser.add_argument("models", nargs="*", metavar="MODELS_OR_ENGINES",
                        help="ONNX models (.onnx), TensorRT engines (.engine/.plan) or folders of them (default: "
                             "the unpacked bundle in the current folder)")
    batch_sizes = ",".join(str(size) for size in DEFAULT_BATCH_SIZES)
    parser.add_argument("--batch-sizes", default=batch_sizes, metavar="1,8",
                        help="comma-separated, at most {} sizes, each 1 to {} (default {})".format(
                            MAX_BATCH_SIZES, MAX_BATCH, batch_sizes))
    parser.add_argument("--warm-up", default=DEFAULT_WARM_UP_MS, metavar="MS",
                        help="untimed calls for this long first, at least one; 0 to {:g} ms (default {:g})".format(
                            MAX_WARM_UP_MS, DEFAULT_WARM_UP_MS))
    span = parser.add_mutually_exclusive_group()
    span.add_argument("--duration", default=DEFAULT_DURATION_S, metavar="S",
                      help="time each model and batch size this long, at least {} calls; {:g} to {:g} s "
                           "(default {:g})".format(MIN_DURATION_RUNS, MIN_DURATION_S, MAX_DURATION_S,
                                                   DEFAULT_DURATION_S))
    span.add_argument("--iterations", metavar="N", help="time exactly N calls instead, 1 to {} (a duration also "
                                                        "ends there)".format(MAX_ITERATIONS))
    parser.add_argument("--threads", metavar="N", help="ONNX Runtime intra-op threads, at most {} per core "
                                                       "(default: ONNX Runtime's choice)".format(THREADS_PER_CORE))
    add_providers_argument(parser)
    parser.add_argument("--cuda-graph", action="store_true", help="TensorRT: replay the execution as a CUDA graph")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the table")
    parser.add_argument("--markdown", metavar="FILE", help="also write the Markdown table to FILE")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = make_parser().parse_intermixed_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
