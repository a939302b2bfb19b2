"""The per-layer report: every compute layer of a Q/DQ (both targets) or FP16 model is matched to its FP32
counterpart on every zoo family (ECA's 1-D convs, SE and CBAM MLPs, MobileNetV2's depthwise convs), and the
errors are sane."""
import numpy as np
import onnx
import pytest

from calibration.fallback import float_layers
from calibration.layer_report import (
    _weight_shape,
    compare_layers,
    compute_nodes,
    load_pair,
    match_layers,
    quantized_layers,
)
from precision.qdq import build_quantized
from calibration.ranges import compute_ranges

FAMILIES = ["resnet18", "se_resnet18", "cbam_resnet18", "eca_resnet18", "mobilenet_v2", "eca_mobilenet_v2"]


def _export(arch, folder):
    from exporter import export_model
    options = {"width_mult": 0.25} if "mobilenet" in arch else {"stem_width": 16}  # CBAM's MLP needs 16 / 16
    path = str(folder / "{}.onnx".format(arch))
    result = export_model(arch, path, num_classes=10, input_size=32, parity_batch_sizes=(2,), **options)
    assert result.parity
    return path


@pytest.mark.parametrize("arch", FAMILIES)
def test_every_compute_layer_is_matched(arch, tmp_path):
    from precision.fp16 import convert_to_fp16
    path = _export(arch, tmp_path)
    fp32, _, _ = load_pair(path, path)
    images = np.random.RandomState(0).randn(8, 3, 32, 32).astype(np.float32)
    ranges = compute_ranges(fp32, images, "minmax", progress=False)
    others = {target: build_quantized(fp32, ranges, target)[0] for target in ("tensorrt", "cpu")}
    others["fp16"] = convert_to_fp16(fp32)
    expected = [node.name for node in compute_nodes(fp32)]
    if "eca" in arch:  # the ECA 1-D convs are among the layers
        assert any(len(_weight_shape(fp32, node)) == 3 for node in compute_nodes(fp32))
    for kind, other in others.items():
        matched, unmatched = match_layers(fp32, other)
        assert unmatched == [] and [a.name for _, a, _ in matched] == expected, kind
        # Matching does not rely on names alone: with every name gone, order + op + weight shape still pair them.
        anonymous = onnx.ModelProto()
        anonymous.CopyFrom(other)
        for node in anonymous.graph.node:
            node.name = ""
        matched, unmatched = match_layers(fp32, anonymous)
        assert unmatched == [] and len(matched) == len(expected), kind
    reports = {kind: compare_layers(fp32, other, images[:4]) for kind, other in others.items()}
    for kind, report in reports.items():
        assert len(report.layers) == len(expected) and report.worst == report.layers[0].name
        assert all(np.isfinite(layer.sqnr_db) and -1.0 <= layer.cosine <= 1.0 + 1e-9 for layer in report.layers)
    assert any(layer.quantized for layer in reports["cpu"].layers)
    assert not any(layer.quantized for layer in reports["fp16"].layers)


def test_a_float_layer_shows_no_error_of_its_own(digits_eca_onnx, digits_calibration_images):
    fp32, _, _ = load_pair(digits_eca_onnx, digits_eca_onnx)
    images = digits_calibration_images.array[:16]
    ranges = compute_ranges(fp32, digits_calibration_images.array[:64], "minmax", progress=False)
    quantized, _ = build_quantized(fp32, ranges, "tensorrt")
    first = quantized_layers(quantized)[0]   # the stem conv: nothing upstream of it is quantized
    report = compare_layers(fp32, float_layers(quantized, fp32, [first]), images)
    by_name = {layer.name: layer for layer in report.layers}
    assert by_name[first].sqnr_db > 100 and not by_name[first].quantized
    assert compare_layers(fp32, quantized, images).layers[-1].sqnr_db < by_name[first].sqnr_db
