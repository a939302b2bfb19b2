"""INT8 calibration on real data: the digits ECA-ResNet-18 calibrated on its training split, evaluated on the
held-out split in ONNX Runtime; the Q/DQ placement of both targets; the calibration methods; determinism."""
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from calibration.api import calibrate
from data.datasets import load_dataset
from precision.qdq import attention_nodes, residual_adds
from calibration.ranges import (
    METHODS,
    NUM_BINS,
    TensorStats,
    compute_ranges,
    entropy_amax,
    full_range_tensors,
    mse_amax,
    percentile_amax,
)
from deploy.calib_cache import read_calibration_cache
from deploy.errors import UserError
from deploy.metadata import read_model_info


# -- fixtures: one calibration run (both targets) shared by the structure and accuracy tests ------------------

@pytest.fixture(scope="module")
def digits_images(digits_split, digits_eca_onnx, tmp_path_factory):
    spec = read_model_info(digits_eca_onnx).preprocess
    cache = str(tmp_path_factory.mktemp("imgcache"))
    train = load_dataset(digits_split[0], spec, num_images=512, seed=0, cache_dir=cache, progress=False)
    val = load_dataset(digits_split[1], spec, num_images=100000, cache_dir=cache, progress=False)
    return train, val


@pytest.fixture(scope="module")
def calibrated(digits_eca_onnx, digits_images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibrated")
    model = str(folder / "eca_digits.onnx")
    shutil.copy(digits_eca_onnx, model)
    # Entropy explicitly: these tests check one method's artifacts on all 512 images (auto: test_selection.py).
    result = calibrate(model, targets=("tensorrt", "cpu"), method="entropy", images=digits_images[0],
                       progress=False)
    return model, result


def _run(path, x):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": x[i:i + 128]})[0] for i in range(0, len(x), 128)])


class Graph:
    def __init__(self, path):
        self.model = onnx.load(path)
        self.nodes = list(self.model.graph.node)
        self.producer = {out: n for n in self.nodes for out in n.output}
        self.consumers = {}
        for n in self.nodes:
            for name in n.input:
                self.consumers.setdefault(name, []).append(n)
        self.inits = {i.name: numpy_helper.to_array(i) for i in self.model.graph.initializer}

    def op(self, name):
        node = self.producer.get(name)
        return node.op_type if node is not None else None

    def quantized(self, name):
        """The float tensor behind a DQ(Q(x)) feeding ``name``, or None."""
        dq = self.producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        q = self.producer.get(dq.input[0])
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0]

    def axis(self, node):
        return next((a.i for a in node.attribute if a.name == "axis"), 1)


# -- accuracy on held-out digits -----------------------------------------------------------------------------

def test_int8_models_of_both_targets_keep_top1_within_one_point(calibrated, digits_images):
    model, result = calibrated
    val = digits_images[1]
    fp32 = (_run(model, val.array).argmax(1) == val.labels).mean()
    assert fp32 > 0.9  # a trained model, so the comparison means something
    for target, path in result.int8_models.items():
        int8 = (_run(path, val.array).argmax(1) == val.labels).mean()
        assert int8 >= fp32 - 0.01, "{}: INT8 top-1 {:.4f} vs FP32 {:.4f}".format(target, int8, fp32)


# -- TensorRT placement ---------------------------------------------------------------------------------------

def test_tensorrt_model_is_signed_symmetric_per_channel(calibrated):
    g = Graph(calibrated[1].int8_models["tensorrt"])
    qdq = [n for n in g.nodes if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        zero_point = g.inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
        scale = g.inits[node.input[1]]
        if node.input[0] in g.inits and g.inits[node.input[0]].ndim > 1:  # a weight
            assert scale.shape == (g.inits[node.input[0]].shape[0],) and g.axis(node) == 0, node.name
        elif node.op_type == "QuantizeLinear":
            assert scale.ndim == 0, node.name  # activations per tensor
    assert max(o.version for o in g.model.opset_import if o.domain in ("", "ai.onnx")) <= 17  # TensorRT 8.5


def test_tensorrt_quantizes_conv_gemm_inputs_and_keeps_attention_float(calibrated):
    model, result = calibrated
    g = Graph(result.int8_models["tensorrt"])
    attention = attention_nodes(onnx.load(model))
    weighted = [n for n in g.nodes if n.op_type in ("Conv", "Gemm")]
    assert sum(n.name in attention for n in weighted) == 8  # one ECA 1-D conv per block
    for node in weighted:
        if node.name in attention:
            assert g.quantized(node.input[0]) is None and g.quantized(node.input[1]) is None, node.name
        else:
            assert g.quantized(node.input[0]) is not None, node.name
            weight = g.quantized(node.input[1])  # an INT8 initializer behind its DequantizeLinear
            assert weight in g.inits and g.inits[weight].dtype == np.int8, node.name
        # no Q/DQ on the outputs of weighted ops
        assert all(c.op_type != "QuantizeLinear" for c in g.consumers.get(node.output[0], [])), node.name
    assert all(n.op_type != "QuantizeLinear" for n in g.nodes if n.input[0] in
               {o for a in g.nodes if a.name in attention for o in a.output})
    assert g.op("logits") == "Gemm"  # the network output is not quantized


def test_tensorrt_residual_adds_quantize_only_the_identity(calibrated):
    model, result = calibrated
    g = Graph(result.int8_models["tensorrt"])
    conv_side = residual_adds(onnx.load(model))
    adds = [n for n in g.nodes if n.op_type == "Add"]
    assert len(adds) == len(conv_side) == 8
    projections = 0
    for node in adds:
        quantized = [g.quantized(name) is not None for name in node.input]
        assert quantized.count(True) == 1, node.name
        fused = node.input[conv_side[node.name]]
        assert not quantized[conv_side[node.name]], node.name
        if g.op(fused) == "Conv":  # projection shortcut: TensorRT fuses the Add into the downsample conv
            projections += 1
            assert g.op(g.quantized(node.input[1 - conv_side[node.name]])) == "Mul"
        else:  # identity shortcut: the residual branch (ending in the ECA Mul) stays float
            assert g.op(fused) == "Mul"
    assert projections == 3


# -- CPU placement --------------------------------------------------------------------------------------------

def test_cpu_model_uses_uint8_activations_and_fused_kernels(calibrated, tmp_path):
    import onnxruntime as ort
    g = Graph(calibrated[1].int8_models["cpu"])
    activation_zps = [g.inits[n.input[2]] for n in g.nodes
                      if n.op_type == "QuantizeLinear" and n.input[0] not in g.inits]
    assert activation_zps and all(zp.dtype == np.uint8 for zp in activation_zps)
    weights = [n for n in g.nodes if n.op_type == "DequantizeLinear" and g.inits.get(n.input[0]) is not None
               and g.inits[n.input[0]].ndim == 4]
    assert weights and all(g.inits[n.input[0]].dtype == np.int8 for n in weights)
    # ONNX Runtime turns the Q/DQ groups into its integer kernels: the placement is one it can execute fast.
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(calibrated[1].int8_models["cpu"], options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert ops.count("QLinearConv") >= 20 and "QLinearAdd" in ops and "QLinearMul" in ops


def test_int8_metadata(calibrated):
    for target, path in calibrated[1].int8_models.items():
        info = read_model_info(path)
        assert info.precision == "int8" and info.arch == "eca_resnet18" and info.preprocess.input_size == 32
        assert info.extra["quant_target"] == target
        assert info.extra["calibration_method"] == "entropy"
        assert info.extra["calibration_images"] == str(calibrated[1].num_images) == "512"


# -- the cache and the JSON carry the same ranges as the models ----------------------------------------------

def test_cache_matches_ranges_and_the_tensorrt_model(calibrated):
    import json
    model, result = calibrated
    cache = read_calibration_cache(result.calib_cache)
    assert (cache.trt_version, cache.algorithm) == (100300, "EntropyCalibration2")  # JetPack 6.1/6.2 by default
    with open(result.ranges_json) as handle:
        ranges = json.load(handle)
    assert ranges["method"] == "entropy" and ranges["num_images"] == 512 and ranges["seed"] == 0
    # every float activation of the FP32 graph, network input and output included
    fp32 = onnx.shape_inference.infer_shapes(onnx.load(model))
    activations = {"input"} | {o for n in fp32.graph.node for o in n.output}
    float_activations = {v.name for v in list(fp32.graph.value_info) + list(fp32.graph.output)
                         if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT} | {"input"}
    assert set(cache.scales) == set(ranges["tensors"]) == (activations & float_activations)
    for name, entry in ranges["tensors"].items():
        assert cache.scales[name] == pytest.approx(entry["amax"] / 127, rel=1e-6)
        assert 0 < entry["amax"] <= max(abs(entry["min"]), abs(entry["max"])) * (1 + 1e-6)
    g = Graph(result.int8_models["tensorrt"])
    checked = 0
    for node in g.nodes:
        if node.op_type == "QuantizeLinear" and node.input[0] not in g.inits:
            assert float(g.inits[node.input[1]]) == pytest.approx(cache.scales[node.input[0]], rel=1e-6)
            checked += 1
    assert checked >= 20


def test_tensorrt_weights_are_stored_as_int8_with_the_logits_of_fp32_weights(calibrated, digits_images, tmp_path,
                                                                            monkeypatch):
    """The INT8 weights are what the Q of each FP32 weight computes in ONNX Runtime: the same logits, bit for
    bit, as the form with FP32 weights behind Q/DQ pairs (ORT's AddQDQPairToWeight), at about a quarter of the
    size."""
    from calibration.ranges import compute_ranges
    from precision import qdq
    model, result = calibrated
    fp32 = onnx.load(model)
    ranges = compute_ranges(fp32, digits_images[0].array[:64], method="minmax", progress=False)
    stored = qdq.quantize(fp32, ranges, "tensorrt", str(tmp_path / "int8w.onnx")).path
    g = Graph(stored)
    assert not [n for n in g.nodes if n.op_type == "QuantizeLinear" and n.input[0] in g.inits]
    # no FP32 Conv/Gemm weight is left but the ECA 1-D convs' (1, 1, k), which the attention keeps float
    assert all(v.dtype != np.float32 or v.ndim <= 1 or v.shape[:2] == (1, 1) for v in g.inits.values())
    # the FP32-weight form: the same ranges and placement, without the storing step
    monkeypatch.setattr(qdq, "store_weights_int8", lambda quantized: [])
    float_weights = qdq.quantize(fp32, ranges, "tensorrt", str(tmp_path / "fp32w.onnx")).path
    x = digits_images[1].array[:256]
    assert np.array_equal(_run(stored, x), _run(float_weights, x))
    # and back, for a TensorRT whose parser would refuse INT8 weights: the same logits again
    from precision.qdq_weights import weights_behind_qdq
    restored = onnx.load(stored)
    assert weights_behind_qdq(restored)
    onnx.checker.check_model(restored, full_check=True)
    onnx.save(restored, str(tmp_path / "restored.onnx"))
    assert np.array_equal(_run(str(tmp_path / "restored.onnx"), x), _run(stored, x))
    assert os.path.getsize(stored) < 0.4 * os.path.getsize(float_weights)


def test_outputs_are_byte_identical_for_the_same_inputs(digits_eca_onnx, digits_images, tmp_path):
    subset = digits_images[0]
    subset = type(subset)(array=subset.array[:48], labels=None, paths=subset.paths[:48], skipped=[])
    files = []
    for run in ("a", "b"):
        os.makedirs(str(tmp_path / run))
        model = str(tmp_path / run / "m.onnx")
        shutil.copy(digits_eca_onnx, model)
        result = calibrate(model, targets=("cpu", "tensorrt"), method="percentile", images=subset, progress=False)
        files.append([result.int8_models["cpu"], result.int8_models["tensorrt"], result.calib_cache,
                      result.ranges_json, result.fp16_model])
    for first, second in zip(*files):
        with open(first, "rb") as a, open(second, "rb") as b:
            assert a.read() == b.read(), os.path.basename(first)


# -- the methods ----------------------------------------------------------------------------------------------

def test_every_method_gives_bounded_ranges(digits_eca_onnx, digits_images):
    model = onnx.load(digits_eca_onnx)
    images = digits_images[0].array[:64]
    keep = full_range_tensors(model)
    assert "input" in keep and sum("Sigmoid" in name for name in keep) == 8
    amax = {}
    for method in METHODS:
        ranges = compute_ranges(model, images, method, progress=False)
        assert ranges.num_images == 64
        for name, r in ranges.tensors.items():
            top = max(abs(r.min), abs(r.max))
            assert 0 < r.amax <= top, (method, name)
            low, high = r.clipped
            assert max(abs(low), abs(high)) == pytest.approx(r.amax)
            if method == "minmax" or name in keep:
                assert r.amax == top, (method, name)
        amax[method] = np.array([r.amax for name, r in ranges.tensors.items() if "Relu" in name])
    # the clipping methods clip most ReLU outputs, each differently
    for method in ("entropy", "percentile", "mse"):
        assert np.mean(amax[method] < amax["minmax"]) > 0.5, method
    assert not np.allclose(amax["entropy"], amax["mse"])


def _reference_entropy(hist, edges, levels=128, start=128):
    """TensorRT's entropy search written out bin by bin (GTC 2017), to check the vectorized version."""
    h = hist.astype(np.float64)
    h[0] = h[1]
    stop = int(np.flatnonzero(hist)[-1]) + 1
    divergences = []
    for i in range(start, stop + 1):
        p = h[:i].copy()
        p[-1] += h[i:].sum()
        q = np.zeros(i)
        for k in range(levels):
            a, b = -(-k * i // levels), -(-(k + 1) * i // levels)
            group = h[a:b]
            if (group > 0).any():
                q[a:b][group > 0] = group.sum() / (group > 0).sum()
        if ((p > 0) & (q == 0)).any():
            divergences.append(np.inf)
            continue
        p, q = p / p.sum(), q / q.sum()
        mask = p > 0
        divergences.append(float(np.sum(p[mask] * np.log(p[mask] / q[mask]))))
    best = len(divergences) - 1 - int(np.argmin(divergences[::-1]))
    return edges[start + best]


@pytest.mark.parametrize("kind", ["relu", "laplace", "gaps"])
def test_vectorized_entropy_equals_the_bin_by_bin_search(kind):
    rng = np.random.RandomState(3)
    if kind == "relu":
        x = np.maximum(rng.randn(200000), 0)
    elif kind == "laplace":
        x = np.abs(rng.laplace(size=200000))
    else:  # empty bins inside the range, and a far outlier
        x = np.concatenate([rng.rand(50000), 3 + rng.rand(1000), [9.0]])
    hist, edges = np.histogram(x, bins=600, range=(0, x.max()))
    assert entropy_amax(hist, edges) == pytest.approx(_reference_entropy(hist, edges), rel=1e-12)


def test_percentile_and_mse_thresholds():
    rng = np.random.RandomState(0)
    x = np.abs(rng.randn(500000))
    hist, edges = np.histogram(x, bins=NUM_BINS, range=(0, x.max()))
    assert percentile_amax(hist, edges, 99.0) == pytest.approx(np.percentile(x, 99.0), rel=0.01)
    assert percentile_amax(hist, edges, 100.0) >= x.max() * (1 - 1e-9)
    # For a unit Gaussian the 8-bit MSE-optimal clip is about 4 sigma (well below the max of 500k samples).
    assert 3.0 < mse_amax(hist, edges) < 4.6


def test_histogram_growth_is_exact():
    rng = np.random.RandomState(1)
    batches = [rng.randn(1000) * scale for scale in (0.1, 1.0, 5.0, 2.0)]
    stats = TensorStats()
    for batch in batches:
        stats.update(batch.astype(np.float32))
    values = np.abs(np.concatenate(batches).astype(np.float32))
    expected = np.bincount(np.floor(values.astype(np.float64) / stats.width).astype(int), minlength=NUM_BINS)
    assert stats.width > 0.1 * np.abs(batches[0]).max() / NUM_BINS  # it did coarsen
    assert np.array_equal(stats.hist, expected)
    assert stats.min == pytest.approx(float(np.concatenate(batches).astype(np.float32).min()))


# -- graph analysis on the other architectures, and bad input --------------------------------------------------

@pytest.mark.parametrize("arch, attention_weighted", [("resnet18", 0), ("se_resnet18", 16), ("cbam_resnet18", 16)])
def test_attention_and_residual_analysis(tmp_path, arch, attention_weighted):
    from exporter import export_model
    path = str(tmp_path / "m.onnx")
    export_model(arch, path, input_size=32, num_classes=10, stem_width=16, parity_batch_sizes=(1,))
    model = onnx.load(path)
    attention = attention_nodes(model)
    by_name = {n.name: n for n in model.graph.node}
    weighted = [name for name in attention if by_name[name].op_type in ("Conv", "Gemm", "MatMul")]
    assert len(weighted) >= attention_weighted and (attention_weighted or not attention)
    head = next(n for n in model.graph.node if "logits" in n.output)
    assert head.name not in attention
    adds = residual_adds(model)
    assert len(adds) == 8
    producers = {o: n for n in model.graph.node for o in n.output}
    for name, index in adds.items():
        fused = producers[by_name[name].input[index]].op_type
        assert fused in ("Conv", "Mul"), (name, fused)  # never the identity (a Relu / MaxPool output)


def test_non_classifiers_are_user_errors(digits_eca_onnx, tmp_path):
    # the images live apart from the models: outputs written inside the --data folder are refused first
    model = onnx.load(digits_eca_onnx)
    del model.metadata_props[:]
    bare = str(tmp_path / "bare.onnx")
    onnx.save(model, bare)
    with pytest.raises(UserError, match="metadata"):
        calibrate(bare, data_dir=str(tmp_path / "images"))
    # a feature extractor: the same metadata, but a 4-D output
    features = onnx.load(digits_eca_onnx)
    relu = next(n for n in reversed(features.graph.node) if n.op_type == "Relu")
    del features.graph.output[:]
    features.graph.output.append(onnx.helper.make_tensor_value_info(relu.output[0], onnx.TensorProto.FLOAT,
                                                                    ["batch", 64, 1, 1]))
    extractor = str(tmp_path / "features.onnx")
    onnx.save(features, extractor)
    with pytest.raises(UserError, match="not a classifier"):
        calibrate(extractor, data_dir=str(tmp_path / "images"))
    with pytest.raises(UserError, match="target"):
        calibrate(digits_eca_onnx, targets=("gpu",), data_dir=str(tmp_path / "images"))


def test_an_nchwc_export_calibrates_as_the_lean_one(digits_eca_onnx, digits_images, tmp_path):
    # `export --attention-form nchwc` only helps ORT's FP32 layout; INT8 and FP16 must come out as from lean.
    from exporter.attention_forms import convert
    subset = digits_images[0]
    subset = type(subset)(array=subset.array[:32], labels=None, paths=subset.paths[:32], skipped=[])
    outputs = {}
    for form in ("lean", "nchwc"):
        os.makedirs(str(tmp_path / form))
        model = onnx.load(digits_eca_onnx)
        if form == "nchwc":
            assert convert(model, "nchwc").channel_gates > 0
        path = str(tmp_path / form / "m.onnx")
        onnx.save(model, path)
        result = calibrate(path, targets=("cpu", "tensorrt"), method="minmax", images=subset, progress=False)
        outputs[form] = [result.int8_models["cpu"], result.int8_models["tensorrt"], result.fp16_model]
    x = digits_images[1].array[:64]
    for lean, nchwc in zip(outputs["lean"], outputs["nchwc"]):
        # Same graph and the same numbers; only the Reshape shape constants keep the nchwc form's 0 (copy the
        # batch dimension) where the lean export wrote -1.
        assert [n.op_type for n in onnx.load(lean).graph.node] == [n.op_type for n in onnx.load(nchwc).graph.node]
        np.testing.assert_array_equal(_run(lean, x), _run(nchwc, x))
