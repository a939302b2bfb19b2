"""The report's plots as a person reads them: no overlapping labels, an honest accuracy axis, log when needed."""
import itertools

import pytest

from benchmark import report
from benchmark.parity_and_speed import BackendResult, BenchmarkResult, Timing
from deploy.runners.execution import latency_record

# The shape of a real run (the demo's digits model): throughputs spanning 100x, accuracies 0.2 points apart.
ROWS = [("pytorch eca_resnet18", "pytorch", 97.98, {1: 60.0, 32: 131.0}),
        ("eca_resnet18.onnx", "onnx", 97.98, {1: 3962.0, 32: 1353.0}),
        ("eca_resnet18.fp16.onnx", "onnx", 97.98, {1: 2975.0, 32: 1541.0}),
        ("eca_resnet18.int8.cpu.onnx", "onnx", 98.15, {1: 1507.0, 32: 1271.0}),
        ("eca_resnet18.int8.tensorrt.onnx", "onnx", 97.81, {1: 133.0, 32: 456.0})]


def make_result(rows=ROWS, labeled=True):
    backends = []
    for name, kind, accuracy, speeds in rows:
        timings = [Timing(b, latency_record([b / ips] * 5, b)) for b, ips in sorted(speeds.items())]
        backends.append(BackendResult(name, name, kind, "fp32", {}, top1_accuracy=accuracy if labeled else None,
                                      top1_agreement=None if kind == "pytorch" else 100.0, timings=timings))
    return BenchmarkResult("eca_resnet18", "random (seed 0)", backends[0], backends[1:],
                           {"labeled": labeled, "num_images": 593, "source": "val", "input_size": 32, "skipped": []},
                           {"threads": 2, "device": "cpu", "iterations": 5, "warmup": 1}, {"threads": 2})


def _texts_overlap(figure):
    """Pairs of visible tick labels, axis labels and legend entries whose drawn boxes intersect."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes = figure.axes[0]
    texts = [t for axis in (axes.xaxis, axes.yaxis) for t in axis.get_ticklabels(which="both")
             if t.get_visible() and t.get_text()]
    texts += [axes.xaxis.label, axes.yaxis.label, axes.title] + list(axes.get_legend().get_texts())
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]


@pytest.mark.parametrize("make_figure", [report.accuracy_throughput_figure, report.latency_figure])
def test_no_label_overlaps_another_and_the_legend_sits_beside_the_axes(make_figure):
    figure = make_figure(make_result())
    try:
        assert _texts_overlap(figure) == []
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        legend = figure.axes[0].get_legend().get_window_extent(renderer)
        assert legend.x0 > figure.axes[0].get_window_extent(renderer).x1  # never over a point or a line
    finally:
        report._pyplot().close(figure)


def test_accuracy_axis_has_a_floor_and_the_fp32_reference_line():
    figure = report.accuracy_throughput_figure(make_result())
    try:
        axes = figure.axes[0]
        assert axes.get_ylim() == (90.0, 100.5)  # 0.34 points apart must not fill the plot
        reference = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
        assert len(reference) == 1 and set(reference[0].get_ydata()) == {97.98}
        assert axes.get_xscale() == "log"  # 131 to 3962 images/s spans more than 10x
        assert "FP32 PyTorch reference: 97.98%" in [t.get_text() for t in axes.get_legend().get_texts()]
    finally:
        report._pyplot().close(figure)


def test_throughput_stays_linear_within_10x_and_agreement_is_plotted_without_labels():
    rows = [(n, k, a, {b: ips / 50.0 + 10.0 for b, ips in s.items()}) for n, k, a, s in ROWS]
    figure = report.accuracy_throughput_figure(make_result(rows, labeled=False))
    try:
        axes = figure.axes[0]
        assert axes.get_xscale() == "linear" and axes.get_ylim() == (95.0, 100.5)
        assert axes.get_ylabel() == "top-1 agreement with PyTorch (%)"
    finally:
        report._pyplot().close(figure)


def test_floor_and_span_rules():
    assert report.accuracy_floor([99.5, 99.75], 99.7) == 90.0
    assert report.accuracy_floor([70.1, 75.4], 76.1) == 65.0
    assert report.accuracy_floor([2.0], 3.0) == 0.0
    assert report.spans_decade([1.0, 10.5]) and not report.spans_decade([1.0, 10.0])


def test_markdown_embeds_the_plots_after_the_tables_they_illustrate(tmp_path):
    files = report.write_report(make_result(), tmp_path)
    markdown = open(files["markdown"], encoding="utf-8").read()
    order = [markdown.index(s) for s in ("## Parity", "![Accuracy against throughput](benchmark_accuracy_throughput.png)",
                                         "## Throughput", "![Latency against batch size](benchmark_latency.png)")]
    assert order == sorted(order)
    assert "random weights (seed 0; agreement is meaningful, accuracy is not)" in markdown


def _colours_by_label(figure):
    """{legend label: RGBA} of every line and point a figure draws."""
    from matplotlib.colors import to_rgba

    axes = figure.axes[0]
    colours = {line.get_label(): to_rgba(line.get_color()) for line in axes.get_lines()}
    colours.update({points.get_label(): tuple(points.get_facecolor()[0]) for points in axes.collections
                    if len(points.get_facecolor())})
    return colours


def test_one_colour_per_model_across_every_plot_of_a_run():
    rows = list(ROWS)
    rows[2] = (rows[2][0], rows[2][1], None, rows[2][3])  # no accuracy: drawn in the latency plot only
    result = make_result(rows)
    latency, accuracy = report.latency_figure(result), report.accuracy_throughput_figure(result)
    try:
        in_latency, in_accuracy = _colours_by_label(latency), _colours_by_label(accuracy)
    finally:
        report._pyplot().close(latency)
        report._pyplot().close(accuracy)
    # the accuracy plot's legend adds the batch size and the accuracy to each name
    in_accuracy = {label.split(" (batch")[0]: colour for label, colour in in_accuracy.items() if " (batch" in label}
    assert rows[2][0] not in in_accuracy and len(in_accuracy) == 4
    assert all(in_accuracy[name] == in_latency[name] for name in in_accuracy)
    assert len(set(in_latency.values())) == len(ROWS)  # and no two models share one
    styles = report.model_styles(result)
    assert [styles[name] for name in in_latency] == [styles[row[0]] for row in ROWS]


def test_speed_sits_under_its_own_heading_not_under_int8_calibration(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "calibration_lines", lambda result: ["- eca_resnet18.int8.cpu.onnx: entropy"])
    files = report.write_report(make_result(), tmp_path)
    sections = {}
    for block in open(files["markdown"], encoding="utf-8").read().split("\n## ")[1:]:
        heading, _, body = block.partition("\n")
        sections[heading] = body
    speed = next(body for heading, body in sections.items() if heading.startswith("Throughput and latency"))
    assert "vs PyTorch (p50): batch 1: " in speed and "![Latency against batch size](benchmark_latency.png)" in speed
    assert sections["INT8 calibration"].strip() == "- eca_resnet18.int8.cpu.onnx: entropy"
