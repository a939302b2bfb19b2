"""Benchmark reports: a Markdown table, JSON, CSV and PNG plots, each written atomically."""
import csv
import io
import os
from typing import Dict, List, Optional, Sequence, Tuple

from deploy.fileio import atomic_path, write_json, write_text

from .parity_and_speed import DISTURBED_BASELINE, BackendResult, BenchmarkResult

# the keys of deploy.runners.execution.latency_record, prefixed by which clock they come from
LATENCY_KEYS = ("runs", "mean_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "images_per_s", "spread", "unstable")
CSV_FIELDS = (
    ("name", "kind", "precision", "batch_size") + tuple("latency_" + k for k in LATENCY_KEYS)
    + tuple("compute_" + k for k in LATENCY_KEYS) + ("top1_accuracy", "top5_accuracy", "top1_agreement", "top5_agreement",
    "max_abs_error", "mean_abs_error", "cosine_similarity", "top1_drop", "path")
)


def _fmt(value, pattern: str = "{:.2f}", missing: str = "-") -> str:
    return missing if value is None else pattern.format(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)
    return "\n".join(lines)


def parity_table(result: BenchmarkResult) -> str:
    header = ["model", "backend", "precision", "top-1 %", "top-5 %", "top-1 agree %", "top-5 agree %",
              "max abs err", "mean abs err", "cosine", "top-1 drop"]
    rows = []
    for backend in result.backends:
        rows.append([
            backend.name, backend.runner.get("backend", backend.kind), backend.precision,
            _fmt(backend.top1_accuracy), _fmt(backend.top5_accuracy),
            _fmt(backend.top1_agreement, missing="ref"), _fmt(backend.top5_agreement, missing="ref"),
            _fmt(backend.max_abs_error, "{:.3g}"), _fmt(backend.mean_abs_error, "{:.3g}"),
            _fmt(backend.cosine_similarity, "{:.6f}"), _fmt(backend.top1_drop),
        ])
    return markdown_table(header, rows)


def calibration_lines(result: BenchmarkResult) -> List[str]:
    """Per INT8 ONNX artifact: the calibration method chosen and the layers left in float (its metadata)."""
    from calibration.api import describe_calibration
    from deploy.metadata import read_model_info
    lines = []
    for backend in result.backends:
        if backend.kind != "onnx" or not backend.path:
            continue
        try:
            text = describe_calibration(read_model_info(backend.path).extra or {})
        except Exception:  # a report line is not worth failing the report for
            text = None
        if text:
            lines.append("- {}: {}".format(backend.name, text))
    return lines


def speed_table(result: BenchmarkResult) -> str:
    with_compute = any(t.compute for b in result.backends for t in b.timings)
    header = ["model", "batch", "img/s (p50)", "mean ms", "p50 ms", "p90 ms", "p99 ms", "p90/p50"]
    if with_compute:
        header += ["compute img/s", "compute p50 ms"]
    rows = []
    for backend in result.backends:
        for timing in backend.timings:
            lat = timing.latency
            spread = _fmt(lat["spread"]) + (" unstable" if lat["unstable"] else "")
            row = [backend.name, timing.batch_size, _fmt(lat["images_per_s"], "{:.1f}"), _fmt(lat["mean_ms"]),
                   _fmt(lat["p50_ms"]), _fmt(lat["p90_ms"]), _fmt(lat["p99_ms"]), spread]
            if with_compute:
                row += [_fmt(timing.compute["images_per_s"] if timing.compute else None, "{:.1f}"),
                        _fmt(timing.compute["p50_ms"] if timing.compute else None)]
            rows.append(row)
            if timing.alone:  # the reference timed alone, beside its figure in turns
                alone = timing.alone
                rows.append([backend.name + " (alone)", timing.batch_size, _fmt(alone["images_per_s"], "{:.1f}"),
                             _fmt(alone["mean_ms"]), _fmt(alone["p50_ms"]), _fmt(alone["p90_ms"]),
                             _fmt(alone["p99_ms"]), _fmt(alone["spread"]) + (" unstable" if alone["unstable"] else "")]
                            + [""] * (len(header) - 8))
        for batch_size, reason in sorted(backend.skipped_batches.items()):
            rows.append([backend.name, batch_size, "skipped: " + reason] + [""] * (len(header) - 3))
    return markdown_table(header, rows)


def speedups(result: BenchmarkResult) -> List[str]:
    """Speed of each artifact relative to the PyTorch reference, per batch size: a ratio of p50 latencies."""
    lines = []
    disturbed = result.disturbed_batches()
    for name, by_batch in result.speedups().items():
        parts = ["batch {}: {:.2f}x".format(batch, ratio) for batch, ratio in sorted(by_batch.items())]
        lines.append("- {} vs {} (p50): {}".format(name, _origin(result), ", ".join(parts)))
    if disturbed:
        lines.append("- no speed-up at batch {}: {} in turns ran off its own speed alone (see the notes)".format(
            ", ".join(str(b) for b in disturbed), _origin(result)))
    return lines


def environment_lines(env: Dict[str, object]) -> List[str]:
    libs = ", ".join("{} {}".format(k, v) for k, v in sorted(env.get("libraries", {}).items()) if v)
    gpus = ", ".join(g["name"] for g in env.get("gpus") or []) or "none"
    lines = [
        "- CPU: {} ({} cores usable), {}".format(env.get("cpu"), env.get("cpu_cores"), env.get("platform")),
        "- GPU: {}".format(gpus),
        "- threads: {} (torch.set_num_threads and ORT intra_op_num_threads)".format(env.get("threads")),
        "- libraries: {}".format(libs),
    ]
    if env.get("omp_wait_policy"):
        lines.append("- PyTorch OpenMP wait policy: {}".format(env["omp_wait_policy"]))
    if env.get("onnxruntime_session"):
        lines.append("- ONNX Runtime session: {}".format(
            ", ".join("{}={}".format(k, v) for k, v in sorted(env["onnxruntime_session"].items()))))
    mode = env.get("jetson_power_mode")
    if mode:
        lines.append("- Jetson power mode: {}".format(mode.get("name", mode) if isinstance(mode, dict) else mode))
    return lines


def set_label(data: Dict[str, object]) -> str:
    """The image set of every figure in the parity table and its size, e.g. "unseen set, N=256"."""
    name = data.get("image_set", "unseen")
    return "{}{}, N={}".format(name, " set" if name == "unseen" else "", data["num_images"])
def _origin(result: BenchmarkResult) -> str:
    """PyTorch, or the FP32 ONNX where an ONNX model from elsewhere had no PyTorch program."""
    return "FP32 ONNX" if result.reference.kind == "onnx" else "PyTorch"


def _reference_phrase(result: BenchmarkResult) -> str:
    if result.reference.kind == "onnx":
        return "the FP32 ONNX of {} (no PyTorch program was given, so it stands in for PyTorch)".format(result.arch)
    return "PyTorch {}".format(result.arch)


def _weights_phrase(result: BenchmarkResult) -> str:
    if str(result.weights).startswith("random"):
        return "random weights ({}; agreement is meaningful, accuracy is not)".format(result.weights.split(" ", 1)[1]
                                                                                      .strip("()"))
    return "weights {}".format(result.weights)


def to_markdown(result: BenchmarkResult, title: Optional[str] = None, plots: Optional[Dict[str, str]] = None) -> str:
    """Parity first, then speed, each with its plot (``plots``: kind -> file name beside the Markdown)."""
    data = result.data
    opts = result.options
    plots = plots or {}
    parts = [
        "# {}".format(title or "benchmark-engine: {}".format(result.arch)),
        "",
        "Reference: {} with {}. Data: {} images from {} ({}), {}x{} input.".format(
            _reference_phrase(result), _weights_phrase(result), data["num_images"], data["source"],
            "labeled" if data["labeled"] else "unlabeled: accuracy cannot be measured, agreement can",
            data["input_size"], data["input_size"]),
        "",
        "## Parity with the {} reference ({})".format(_origin(result), set_label(data)),
        "",
        parity_table(result),
        "",
    ]
    if plots.get("accuracy_plot"):
        parts += ["![Accuracy against throughput]({})".format(plots["accuracy_plot"]), ""]
    parts += [
        "## Throughput and latency (end to end{})".format(
            "; compute-only where the backend reports it" if opts["device"] != "cpu" else ""),
        "",
        "{} at {}x{} with {}. Timing: {} iterations after 1 + {} warm-up runs per batch size, {} threads, "
        "device {}; the backends take turns (A, B, A, B, ...), and img/s and speed-ups come from p50 latency. "
        "PyTorch is also timed alone first (its `(alone)` row), and the other backends in turns without it: each "
        "speed-up is PyTorch alone against the backend apart from it, and is given only where PyTorch's p50 in "
        "turns stays within {:.0f}% of its p50 alone.".format(
            result.arch, data["input_size"], data["input_size"], _weights_phrase(result), opts["iterations"],
            opts["warmup"], opts["threads"], opts["device"], 100 * (DISTURBED_BASELINE - 1)),
        "",
        speed_table(result),
        "",
    ]
    ratio_lines = speedups(result)
    if ratio_lines:
        parts += ratio_lines + [""]
    if plots.get("latency_plot"):
        parts += ["![Latency against batch size]({})".format(plots["latency_plot"]), ""]
    calibration = calibration_lines(result)  # after speed, so speed stays under its own heading
    if calibration:
        parts += ["## INT8 calibration", ""] + calibration + [""]
    if result.notes:
        parts += ["## Notes", ""] + ["- " + n for n in result.notes] + [""]
    parts += ["## Environment", ""] + environment_lines(result.environment) + [""]
    return "\n".join(parts)


def csv_rows(result: BenchmarkResult) -> List[Dict[str, object]]:
    rows = []
    for backend in result.backends:
        for timing in backend.timings or [None]:
            rows.append(_csv_row(backend, timing))
    return rows


def _csv_row(backend: BackendResult, timing) -> Dict[str, object]:
    row = {key: getattr(backend, key) for key in (
        "name", "kind", "precision", "top1_accuracy", "top5_accuracy", "top1_agreement", "top5_agreement",
        "max_abs_error", "mean_abs_error", "cosine_similarity", "top1_drop", "path")}
    if timing is not None:
        row["batch_size"] = timing.batch_size
        row.update({"latency_" + k: timing.latency[k] for k in LATENCY_KEYS})
        row.update({"compute_" + k: timing.compute[k] for k in LATENCY_KEYS if timing.compute})
    return row


def to_csv(result: BenchmarkResult) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(result):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def _save_figure(figure, path: str) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def model_styles(result: BenchmarkResult) -> Dict[str, Tuple[Tuple[float, ...], str]]:
    """{row label: (colour, marker)}, by each model's place among the run's backends, so one model looks the same
    in every plot of a run, whichever of them it is missing from. Every plot takes its styles from here."""
    from matplotlib import colormaps

    colours = colormaps["tab10"].colors
    return {backend.name: (colours[index % len(colours)], MARKERS[index % len(MARKERS)])
            for index, backend in enumerate(result.backends)}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    return plt


def _ticker():
    from matplotlib import ticker
    return ticker


def _plain_log_axis(axis, values: Sequence[float]) -> None:
    """Log-scale ticks at 1, 2 and 5 times powers of ten (only powers of ten past 3 decades), written as plain
    numbers, and no minor labels: matplotlib's default minor labels (3x10^2, 4x10^2 ...) run into each other."""
    ticker = _ticker()
    positive = [v for v in values if v and v > 0]
    subs = (1.0, 2.0, 5.0) if positive and max(positive) / min(positive) <= 1000 else (1.0,)
    axis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
    axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: "{:g}".format(value)))
    axis.set_minor_formatter(ticker.NullFormatter())


def _legend_outside(axes) -> None:
    """Names go in a legend to the right of the axes, so no label can overlap a point, a line or another label."""
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


def accuracy_floor(values: Sequence[float], reference: float) -> float:
    """The lower end of an accuracy axis: at least 5 points below the lowest value and the reference,
    rounded down to a multiple of 5, so a 0.2-point difference looks like one, not like a cliff."""
    low = min(list(values) + [reference])
    return max(0.0, 5.0 * ((low - 5.0) // 5.0))


def spans_decade(values: Sequence[float]) -> bool:
    """Whether positive ``values`` span more than 10x, the point at which a log axis reads better."""
    positive = [v for v in values if v and v > 0]
    return bool(positive) and max(positive) / min(positive) > 10.0


def plot_latency(result: BenchmarkResult, path: str) -> None:
    _save_and_close(latency_figure(result), path)


def plot_accuracy_throughput(result: BenchmarkResult, path: str) -> None:
    _save_and_close(accuracy_throughput_figure(result), path)


def _save_and_close(figure, path: str) -> None:
    try:
        _save_figure(figure, path)
    finally:
        _pyplot().close(figure)


def latency_figure(result: BenchmarkResult):
    """p50 latency of every backend against batch size, log-log, names in a legend beside the axes."""
    plt = _pyplot()
    styles = model_styles(result)
    figure, axes = plt.subplots(figsize=(7.5, 4.2))
    try:
        for backend in (b for b in result.backends if b.timings):
            colour, marker = styles[backend.name]
            axes.plot([t.batch_size for t in backend.timings], [t.latency["p50_ms"] for t in backend.timings],
                      color=colour, marker=marker, label=backend.name)
            unstable = [t for t in backend.timings if t.unstable]
            if unstable:  # p90/p50 > 1.5: an open ring around the point says "do not trust this one"
                axes.scatter([t.batch_size for t in unstable], [t.latency["p50_ms"] for t in unstable], s=160,
                             facecolors="none", edgecolors=[colour], linewidths=1.2)
        axes.set_xscale("log", base=2)
        batch_sizes = sorted({t.batch_size for b in result.backends for t in b.timings})
        axes.set_xticks(batch_sizes, [str(b) for b in batch_sizes])  # the measured sizes, not powers of 2
        axes.xaxis.set_minor_locator(_ticker().NullLocator())
        axes.set_yscale("log")
        _plain_log_axis(axes.yaxis, [t.latency["p50_ms"] for b in result.backends for t in b.timings])
        axes.set_xlabel("batch size")
        axes.set_ylabel("latency p50 (ms, log scale)")
        if any(t.unstable for b in result.backends for t in b.timings):  # explain the rings in the legend
            axes.scatter([], [], s=160, facecolors="none", edgecolors="0.3", label="unstable (p90/p50 > 1.5)")
        axes.set_title("{}: latency against batch size ({} threads)".format(result.arch, result.options["threads"]),
                       fontsize=10)
        axes.grid(True, which="both", alpha=0.3)
        _legend_outside(axes)
    except Exception:
        plt.close(figure)
        raise
    return figure


def accuracy_throughput_figure(result: BenchmarkResult):
    """Each backend at its best batch size; the PyTorch FP32 reference's accuracy as a dashed line."""
    plt = _pyplot()
    labeled = result.data["labeled"]
    points = []
    for backend in result.backends:
        if not backend.timings:
            continue
        best = max(backend.timings, key=lambda t: t.images_per_s)
        y = backend.top1_accuracy if labeled else (100.0 if backend.kind == "pytorch" else backend.top1_agreement)
        if y is not None:
            points.append((backend, best, y))
    reference = result.reference.top1_accuracy if labeled else 100.0
    styles = model_styles(result)
    figure, axes = plt.subplots(figsize=(7.5, 4.2))
    try:
        for backend, best, y in points:
            colour, marker = styles[backend.name]
            axes.scatter([best.images_per_s], [y], s=45, color=[colour], marker=marker, zorder=3,
                         label="{} (batch {}{}): {:.2f}%".format(backend.name, best.batch_size,
                                                                ", unstable" if best.unstable else "", y))
        if reference is not None:
            axes.axhline(reference, color="0.3", linestyle="--", linewidth=1, zorder=2,
                         label="FP32 {} reference: {:.2f}%".format(
                             "ONNX" if result.reference.kind == "onnx" else "PyTorch", reference))
            axes.set_ylim(accuracy_floor([y for _, _, y in points], reference), 100.5)
        if spans_decade([best.images_per_s for _, best, _ in points]):
            axes.set_xscale("log")
            _plain_log_axis(axes.xaxis, [best.images_per_s for _, best, _ in points])
            axes.set_xlabel("throughput (images/s at p50 latency, best batch size, log scale)")
        else:
            axes.set_xlabel("throughput (images/s at p50 latency, best batch size)")
        axes.set_ylabel("top-1 accuracy (%)" if labeled else "top-1 agreement with {} (%)".format(_origin(result)))
        axes.set_title("{}: {} against throughput".format(result.arch, "accuracy" if labeled else "agreement"),
                       fontsize=10)
        axes.grid(True, which="both", alpha=0.3)
        _legend_outside(axes)
    except Exception:
        plt.close(figure)
        raise
    return figure


def write_report(result: BenchmarkResult, directory, stem: str = "benchmark",
                 title: Optional[str] = None) -> Dict[str, str]:
    """Write ``stem``.md/.json/.csv and two PNG plots into ``directory``; return the paths by kind."""
    directory = os.path.abspath(os.fspath(directory))
    paths = {
        "markdown": os.path.join(directory, stem + ".md"),
        "json": os.path.join(directory, stem + ".json"),
        "csv": os.path.join(directory, stem + ".csv"),
        "latency_plot": os.path.join(directory, stem + "_latency.png"),
        "accuracy_plot": os.path.join(directory, stem + "_accuracy_throughput.png"),
    }
    plots = {kind: os.path.basename(paths[kind]) for kind in ("accuracy_plot", "latency_plot")}
    write_text(paths["markdown"], to_markdown(result, title, plots))
    write_json(paths["json"], result.to_dict())
    write_text(paths["csv"], to_csv(result))
    plot_latency(result, paths["latency_plot"])
    plot_accuracy_throughput(result, paths["accuracy_plot"])
    return paths
