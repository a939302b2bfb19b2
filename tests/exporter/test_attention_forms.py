"""The export forms of the attention gates (exporter/attention_forms.py): structure of the ECA, SE and CBAM blocks
in each form, exact round trip, parity with PyTorch, and that ONNX Runtime keeps the nchwc form blocked."""
import json
from collections import Counter

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper, shape_inference

from exporter import export_model
from exporter.attention_forms import MARKER, convert, model_form, to_lean

# Narrow ResNet-18s at 64x64: stages of 16/32/64/128 channels (multiples of the NCHWc block) at 16/8/4/2 pixels.
SMALL = dict(input_size=64, stem_width=16, num_classes=10, parity_batch_sizes=(1, 3))
BLOCKS = 8
IDENTITY_BLOCKS = 5  # BasicBlocks without a projection shortcut: all but the first of stages 2-4


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{(arch, form): ExportResult} for the three attention ResNet-18s in both forms."""
    directory = tmp_path_factory.mktemp("forms")
    return {(arch, form): export_model(arch, str(directory / "{}.{}.onnx".format(arch, form)),
                                       attention_form=form, **SMALL)
            for arch in ("eca_resnet18", "se_resnet18", "cbam_resnet18") for form in ("lean", "nchwc")}


def _model(result):
    return onnx.load(result.path)


def _ops(model):
    return Counter(node.op_type for node in model.graph.node)


def _inserted(model, role):
    return [n for n in model.graph.node if n.name.rsplit("/", 1)[-1] == MARKER + role]


def _attr(node, name):
    return next(onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def _shapes(model):
    inferred = shape_inference.infer_shapes(model)
    return {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
            for v in list(inferred.graph.value_info) + list(inferred.graph.output)}


def _gate_muls(model):
    return [n for n in model.graph.node if n.op_type == "Mul"]


@pytest.mark.parametrize("arch", ["eca_resnet18", "se_resnet18", "cbam_resnet18"])
def test_both_forms_match_pytorch(exports, arch):
    for form in ("lean", "nchwc"):
        result = exports[(arch, form)]
        assert result.parity, result.parity.to_dict()
        assert result.parity.max_abs_error < 1e-4
        assert result.metadata["attention_form"] == form
        assert model_form(_model(result)) == form


def test_eca_nchwc_block_structure(exports):
    model = _model(exports[("eca_resnet18", "nchwc")])
    ops = _ops(model)
    # Per block: pool, Reshape to (N,1,C), 1-D conv, sigmoid, Reshape to (N,C,1,1), two broadcast convs, Mul.
    assert ops["Sigmoid"] == ops["Mul"] == BLOCKS
    assert ops["Reshape"] == 2 * BLOCKS
    assert ops["GlobalAveragePool"] == BLOCKS + 1
    assert not {"Shape", "Expand", "Transpose", "Squeeze", "Unsqueeze", "Gather", "Concat", "Resize"} & set(ops)
    eca_convs = [n for n in model.graph.node if n.op_type == "Conv" and len(_attr(n, "kernel_shape")) == 1]
    assert len(eca_convs) == BLOCKS
    widths, heights = _inserted(model, "broadcast_w"), _inserted(model, "broadcast_h")
    residual = _inserted(model, "residual")
    assert len(widths) == len(heights) == BLOCKS and len(residual) == IDENTITY_BLOCKS
    assert ops["Conv"] == 20 + BLOCKS + 2 * BLOCKS + IDENTITY_BLOCKS  # backbone + 1-D + broadcast + residual
    _check_broadcast_chain(model)


def _check_broadcast_chain(model):
    """Each gate is broadcast by depthwise convs of ones with kernel-1 padding, and the Mul sees equal shapes
    with the symbolic batch kept, which is what ORT's NCHWc transformer needs."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    shapes = _shapes(model)
    for node in _inserted(model, "broadcast_w") + _inserted(model, "broadcast_h") + _inserted(model, "residual"):
        weight = inits[node.input[1]]
        assert np.all(weight == 1.0) and _attr(node, "group") == weight.shape[0]
        kernel = _attr(node, "kernel_shape")
        assert _attr(node, "pads") == [kernel[0] - 1, kernel[1] - 1, kernel[0] - 1, kernel[1] - 1]
    for mul in _gate_muls(model):
        a, b = (shapes[name] for name in mul.input)
        assert a == b and a[0] == "batch", (mul.name, a, b)
    reshapes = [n for n in model.graph.node if n.op_type == "Reshape"]
    assert all(inits[n.input[1]][0] == 0 for n in reshapes), "a gate Reshape still writes -1 for the batch"


def test_eca_lean_block_structure(exports):
    model = _model(exports[("eca_resnet18", "lean")])
    assert not any(MARKER in n.name for n in model.graph.node)
    assert _ops(model)["Conv"] == 20 + BLOCKS
    for mul in _gate_muls(model):
        assert _shapes(model)[mul.input[1]][1:] == [_shapes(model)[mul.input[0]][1], 1, 1]


def test_se_forms_structure(exports):
    lean, nchwc = (_model(exports[("se_resnet18", form)]) for form in ("lean", "nchwc"))
    ops = _ops(lean)
    # Per block: pool, Reshape (N,C), MatMul, Relu, MatMul, Sigmoid, Reshape (N,C,1,1), Mul; no biases (Table A).
    assert ops["MatMul"] == 2 * BLOCKS and ops["Sigmoid"] == ops["Mul"] == BLOCKS and ops["Reshape"] == 2 * BLOCKS
    assert ops["GlobalAveragePool"] == BLOCKS + 1 and "Add" in ops and ops["Add"] == BLOCKS
    assert ops["Conv"] == 20 and ops["Gemm"] == 1  # the classifier only
    added = _ops(nchwc) - ops
    assert added == Counter({"Conv": 2 * BLOCKS + IDENTITY_BLOCKS})
    _check_broadcast_chain(nchwc)


def test_cbam_forms_structure(exports):
    lean, nchwc = (_model(exports[("cbam_resnet18", form)]) for form in ("lean", "nchwc"))
    ops = _ops(lean)
    # Channel gate: avg- and max-pooled vectors through a shared MLP, summed; spatial gate: channel max and mean,
    # a 7x7 conv (BN folded in), sigmoid. Two gating Muls per block.
    assert ops["Mul"] == 2 * BLOCKS and ops["Sigmoid"] == 2 * BLOCKS
    assert ops["ReduceMax"] == ops["ReduceMean"] == ops["Concat"] == BLOCKS
    assert ops["Conv"] == 20 + BLOCKS
    added = _ops(nchwc) - ops
    # Channel gates: two broadcast convs each; spatial gates: one 1x1 conv from 1 to C channels each.
    assert added == Counter({"Conv": 2 * BLOCKS + BLOCKS + IDENTITY_BLOCKS})
    spatial = _inserted(nchwc, "broadcast_c")
    inits = {i.name: numpy_helper.to_array(i) for i in nchwc.graph.initializer}
    assert len(spatial) == BLOCKS
    for node in spatial:
        assert inits[node.input[1]].shape[1:] == (1, 1, 1) and _attr(node, "group") == 1
    _check_broadcast_chain(nchwc)


@pytest.mark.parametrize("arch", ["eca_resnet18", "se_resnet18", "cbam_resnet18"])
def test_to_lean_undoes_the_nchwc_pass_exactly(exports, arch):
    lean, nchwc = (_model(exports[(arch, form)]) for form in ("lean", "nchwc"))
    removed = to_lean(nchwc)
    assert removed > 0 and model_form(nchwc) == "lean"
    assert {p.key: p.value for p in nchwc.metadata_props}["attention_form"] == "lean"
    assert [(n.op_type, list(n.input)[:1], list(n.output)) for n in nchwc.graph.node] == \
        [(n.op_type, list(n.input)[:1], list(n.output)) for n in lean.graph.node]
    onnx.checker.check_model(nchwc, full_check=True)
    # and back again: the pass is deterministic
    convert(nchwc, "nchwc")
    again = _model(exports[(arch, "nchwc")])
    assert [n.name for n in nchwc.graph.node] == [n.name for n in again.graph.node]


def test_same_outputs_in_onnx_runtime_at_any_batch(exports):
    import onnxruntime as ort
    x = np.random.RandomState(0).rand(5, 3, 64, 64).astype(np.float32)
    for arch in ("eca_resnet18", "cbam_resnet18"):
        lean, nchwc = (ort.InferenceSession(exports[(arch, form)].path, providers=["CPUExecutionProvider"])
                       for form in ("lean", "nchwc"))
        np.testing.assert_allclose(nchwc.run(None, {"input": x})[0], lean.run(None, {"input": x})[0], atol=1e-5)


def _optimized_ops(path, tmp_path):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)


def test_onnx_runtime_keeps_the_nchwc_form_blocked(exports, tmp_path):
    lean = _optimized_ops(exports[("eca_resnet18", "lean")].path, tmp_path)
    if "ReorderOutput" not in lean:
        pytest.skip("this CPU has no NCHWc kernels in ONNX Runtime (no AVX2/AVX-512)")
    nchwc = _optimized_ops(exports[("eca_resnet18", "nchwc")].path, tmp_path)
    # Lean: the feature map goes back to NCHW for every Mul, and the Add and ReLU run on their own.
    assert lean["ReorderOutput"] > BLOCKS and lean["Add"] == lean["Relu"] == BLOCKS
    # nchwc: only the pooled vectors leave the blocked layout (plus the classifier's pool); the residual Add and
    # ReLU are fused into a convolution (ORT keeps Mul's op type when it runs it on blocked tensors).
    assert nchwc["ReorderOutput"] == BLOCKS + 1 and nchwc["ReorderInput"] == BLOCKS
    assert "Add" not in nchwc and "Relu" not in nchwc


def test_gates_with_unaligned_channels_stay_lean(tmp_path):
    # MobileNetV2's ECA gates sit on 16- to 320-channel block outputs: 24 and 320 ... are not multiples of 16.
    result = export_model("eca_mobilenet_v2", str(tmp_path / "m.onnx"), num_classes=10, input_size=64,
                          parity_batch_sizes=(2,), attention_form="nchwc")
    assert result.parity, result.parity.to_dict()
    report = result.attention_form
    assert report.channel_gates > 0 and report.skipped
    assert all("not a multiple of 16" in reason or "spatial" in reason for reason in report.skipped)


def test_cli_export_attention_form(tmp_path):
    from cli import cli
    out = tmp_path / "eca.onnx"
    result = CliRunner().invoke(cli, ["export", "eca_resnet18", "-o", str(out), "--attention-form", "nchwc",
                                      "--input-size", "64", "--num-classes", "10", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["attention_form"]["form"] == "nchwc" and payload["attention_form"]["channel_gates"] == BLOCKS
    assert payload["metadata"]["attention_form"] == "nchwc"
    bad = CliRunner().invoke(cli, ["export", "eca_resnet18", "--attention-form", "fast"])
    assert bad.exit_code == 2


def _two_gate_graph():
    """x -> conv -> gate A (pool, sigmoid) -> gate B (pool, Resize, sigmoid): Resize's shape inference forgets
    the symbolic batch, so gate B cannot be proven to match its feature map."""
    from onnx import TensorProto, helper
    rng = np.random.RandomState(0)
    inits = [numpy_helper.from_array(rng.randn(16, 16, 1, 1).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([-1, 16, 1, 1], np.int64), "shape"),
             numpy_helper.from_array(np.ones(4, np.float32), "scales")]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
        helper.make_node("GlobalAveragePool", ["y"], ["pa"], name="a/pool"),
        helper.make_node("Reshape", ["pa", "shape"], ["ra"], name="a/reshape"),
        helper.make_node("Sigmoid", ["ra"], ["sa"], name="a/sigmoid"),
        helper.make_node("Mul", ["y", "sa"], ["za"], name="a/Mul"),
        helper.make_node("GlobalAveragePool", ["za"], ["pb"], name="b/pool"),
        helper.make_node("Resize", ["pb", "", "scales"], ["rb"], name="b/resize", mode="nearest"),
        helper.make_node("Sigmoid", ["rb"], ["sb"], name="b/sigmoid"),
        helper.make_node("Mul", ["za", "sb"], ["out"], name="b/Mul"),
    ]
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 16, 4, 4]) for name in ("x", "out")]
    graph = helper.make_graph(nodes, "gates", io[:1], io[1:], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_gate_whose_batch_cannot_be_proven_stays_lean():
    import onnxruntime as ort
    lean = _two_gate_graph()
    model = _two_gate_graph()
    report = convert(model, "nchwc")
    onnx.checker.check_model(model, full_check=True)
    assert report.channel_gates == 1 and len(report.skipped) == 1 and report.skipped[0].startswith("b/Mul")
    assert [n.name for n in model.graph.node if MARKER in n.name] == [
        "a/Mul/" + MARKER + "broadcast_w", "a/Mul/" + MARKER + "broadcast_h"]
    x = np.random.RandomState(1).randn(3, 16, 4, 4).astype(np.float32)
    expected, got = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                     .run(None, {"x": x})[0] for m in (lean, model))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_attention_cost_benchmark_runs_end_to_end(tmp_path, capsys):
    from benchmark import bench_attention_cost
    code = bench_attention_cost.main(["--arches", "resnet18", "eca_resnet18", "--input-size", "64", "--stem-width",
                                      "16", "--batches", "2", "--rounds", "1", "--per-round", "1", "--no-int8",
                                      "--profile", "--profile-runs", "1", "--out", str(tmp_path), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    rows = {(r["arch"], r["form"]): r for r in result["rows"]}
    assert set(rows) == {("resnet18", "lean"), ("eca_resnet18", "nchwc"), ("eca_resnet18", "lean")}
    assert rows[("resnet18", "lean")]["ratio_to_baseline"] == 1.0
    assert result["session"]["graph_optimization_level"] == "all" and result["session"]["intra_op_threads"] == 2
    nchwc = next(p for p in result["profiles"] if p["form"] == "nchwc")
    assert nchwc["beyond_baseline"]["ops"]["Mul"] > 0  # the gate's Mul is among what ResNet-18 does not run
