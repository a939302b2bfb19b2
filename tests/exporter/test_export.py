"""Export: the checked ONNX graph, its metadata, the lean ECA block, parity, and atomic output."""
import json
import os

import numpy as np
import onnx
import pytest
import torch

import exporter.api
import models
from deploy.errors import UserError
from deploy.metadata import read_model_info
from deploy.preprocess import PreprocessSpec
from exporter import export_model

SMALL = dict(input_size=64, stem_width=16, parity_batch_sizes=(1, 3))


@pytest.fixture(scope="module")
def eca_export(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "eca.onnx"
    return export_model("eca_resnet18", str(path), num_classes=10, attention_form="lean", **SMALL)


def _ops(path):
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def test_export_passes_full_check_with_named_dynamic_io(eca_export):
    model = onnx.load(eca_export.path)
    onnx.checker.check_model(model, full_check=True)
    (graph_input,), (graph_output,) = model.graph.input, model.graph.output
    assert graph_input.name == "input" and graph_output.name == "logits"
    assert graph_input.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim[1:]] == [3, 64, 64]
    assert eca_export.simplified and eca_export.random_weights


def test_metadata_carries_preprocessing_and_provenance(eca_export):
    meta = {p.key: p.value for p in onnx.load(eca_export.path).metadata_props}
    assert meta["arch"] == "eca_resnet18"
    assert meta["num_classes"] == "10"
    assert json.loads(meta["mean"]) == [0.485, 0.456, 0.406]
    assert json.loads(meta["std"]) == [0.229, 0.224, 0.225]
    assert (meta["input_size"], meta["crop_size"], meta["resize_size"]) == ("64", "64", "73")
    assert meta["interpolation"] == "bilinear"
    assert meta["checkpoint_sha256"] == "" and meta["weights"] == "random (seed 0)"
    info = read_model_info(eca_export.path)
    assert info.preprocess == PreprocessSpec(input_size=64, resize_size=73)


def test_eca_block_exports_lean(eca_export):
    # Per ECA block: GlobalAveragePool, Reshape to (N,1,C), Conv, Sigmoid, Reshape back, Mul. No shape chains.
    # (The nchwc form's structure is tested in test_attention_forms.py.)
    ops = _ops(eca_export.path)
    assert ops.count("Conv") == 20 + 8  # the backbone's convs and one 1-D conv per block, nothing inserted
    blocks = 8
    assert ops.count("Sigmoid") == blocks
    assert ops.count("Mul") == blocks
    assert ops.count("Reshape") == 2 * blocks
    assert ops.count("GlobalAveragePool") == blocks + 1  # + the classifier's pool
    assert not {"Shape", "Expand", "Transpose", "Squeeze", "Unsqueeze", "Gather", "Concat"} & set(ops)
    model = onnx.load(eca_export.path)
    eca_convs = [n for n in model.graph.node if n.op_type == "Conv"
                 and any(a.name == "kernel_shape" and len(a.ints) == 1 for a in n.attribute)]
    assert len(eca_convs) == blocks


def test_parity_at_two_batch_sizes(eca_export):
    report = eca_export.parity
    assert report and [c.batch_size for c in report.comparisons] == [1, 3]
    assert report.max_abs_error < 1e-4
    assert all(c.top1_agreement == 1.0 for c in report.comparisons)
    assert report.providers == ["CPUExecutionProvider"]


def test_checkpoint_weights_give_pytorch_numbers(tmp_path):
    torch.manual_seed(3)
    source = models.create_model("eca_resnet18", num_classes=10, stem_width=16, k_size=(5, 5, 3, 3))
    ckpt = tmp_path / "eca.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, ckpt)
    result = export_model("eca_resnet18", str(tmp_path / "eca.onnx"), weights=str(ckpt), input_size=64)
    assert result.parity and not result.random_weights
    meta = {p.key: p.value for p in onnx.load(result.path).metadata_props}
    from deploy.fileio import sha256_file
    assert meta["checkpoint_sha256"] == sha256_file(str(ckpt))
    import onnxruntime as ort
    x = np.random.RandomState(0).randn(2, 3, 64, 64).astype(np.float32)
    got = ort.InferenceSession(result.path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, source(torch.from_numpy(x)).detach().numpy(), atol=1e-4)


@pytest.mark.parametrize("arch", ["se_resnet18", "cbam_resnet18", "eca_mobilenet_v2"])
def test_other_families_export_with_parity(tmp_path, arch):
    options = {} if "mobilenet" in arch else {"stem_width": 16}
    result = export_model(arch, str(tmp_path / "m.onnx"), num_classes=10, input_size=64,
                          parity_batch_sizes=(2,), **options)
    assert result.parity, result.parity.to_dict()


def test_fixed_batch_and_no_simplify(tmp_path):
    result = export_model("resnet18", str(tmp_path / "fixed.onnx"), batch=2, do_simplify=False, num_classes=10,
                          **SMALL)
    graph_input = onnx.load(result.path).graph.input[0]
    assert graph_input.type.tensor_type.shape.dim[0].dim_value == 2
    assert [c.batch_size for c in result.parity.comparisons] == [2]
    assert not result.simplified


def test_simplify_failure_keeps_the_unsimplified_model(tmp_path, monkeypatch):
    import onnxsim
    monkeypatch.setattr(onnxsim, "simplify", lambda model: (_ for _ in ()).throw(RuntimeError("boom")))
    result = export_model("resnet18", str(tmp_path / "m.onnx"), num_classes=10, **SMALL)
    assert not result.simplified and "onnxsim failed (boom)" in result.notes[0]
    assert result.parity


def test_interrupted_export_leaves_no_file(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(exporter.api, "check_parity", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model("resnet18", str(tmp_path / "m.onnx"), num_classes=10, **SMALL)
    assert os.listdir(tmp_path) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="opset"):
        export_model("resnet18", str(tmp_path / "m.onnx"), opset=11)
    with pytest.raises(UserError, match="unknown model"):
        export_model("resnet19", str(tmp_path / "m.onnx"))


def test_export_is_deterministic(tmp_path):
    first = export_model("eca_resnet18", str(tmp_path / "a.onnx"), num_classes=10, **SMALL)
    second = export_model("eca_resnet18", str(tmp_path / "b.onnx"), num_classes=10, **SMALL)
    with open(first.path, "rb") as a, open(second.path, "rb") as b:
        assert a.read() == b.read()
