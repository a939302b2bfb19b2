"""deploy.check: a digits bundle's reference data, checked torch-free with ONNX Runtime standing in for TensorRT.

The bundle holds the FP32, FP16 and INT8 (TensorRT Q/DQ) models of a digits ECA-ResNet-18 and the PyTorch logits
of held-out images. Every artifact must pass; a model from other weights or a corrupted one must FAIL (exit 1).
"""
import json
import os

import numpy as np
import pytest

from deploy import check
from deploy.errors import UserError
from deploy.manifest import REFERENCE_FILE
from deploy.reference import load_reference
from tests.blocking import attempts_from_project
from tests.deploy.device_check import BLOCKED, copy_bundle, run_check





def test_reference_data_loads_without_pickle(digits_bundle, digits_split):
    root = digits_bundle[0]
    with np.load(os.path.join(root, REFERENCE_FILE), allow_pickle=False) as data:
        assert data["pixels"].shape == (32, 32, 32, 3) and data["pixels"].dtype == np.uint8
        assert data["logits"].shape == (32, 10) and data["labels"].shape == (32,)
    reference = load_reference(os.path.join(root, REFERENCE_FILE))
    assert reference.arch == "eca_resnet18" and len(reference.checkpoint_sha256) == 64
    assert reference.inputs.shape == (32, 3, 32, 32) and reference.inputs.dtype == np.float32
    assert reference.source == "val" and {b.precision for b in reference.bars} == {"fp32", "fp16", "int8"}
    # The reference logits are PyTorch's: the trained model is right on nearly all held-out digits.
    assert np.mean(np.argmax(reference.logits, axis=1) == reference.labels) >= 0.9


def test_every_model_passes_torch_free(digits_bundle, tmp_path):
    root, models, _ = digits_bundle
    device = copy_bundle(root, tmp_path)
    proc = run_check(device, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert attempts_from_project(proc.stderr, device) == []  # nothing of ours even tried to import torch
    report = json.loads(proc.stdout)
    assert report["passed"] is True and report["reference"]["images"] == 32
    assert report["notes"] == ["no TensorRT engines here yet, so only the ONNX models were checked; "
                               "`sh build_engines.sh` builds them where TensorRT is installed"]
    by_name = {a["name"]: a for a in report["artifacts"]}
    assert sorted(by_name) == sorted(os.path.basename(m) for m in models)
    assert {a["precision"] for a in by_name.values()} == {"fp32", "fp16", "int8"}
    for artifact in by_name.values():
        assert artifact["status"] == "PASS" and artifact["reasons"] == []
        assert artifact["runner"]["providers"] == ["CPUExecutionProvider"]
        assert artifact["top1_agreement"] == artifact["bar"]["measured_top1_agreement"]  # same CPU, same numbers
        assert artifact["top1_agreement"] >= artifact["bar"]["required_top1_agreement"]
        assert artifact["cosine_similarity"] >= artifact["bar"]["required_cosine"]
        assert 0 < artifact["latency_p50_ms"] <= artifact["latency_p99_ms"]
        assert artifact["top1_accuracy"] >= 90.0
    assert by_name["eca_digits.onnx"]["max_abs_error"] < 1e-3


def test_text_report(digits_bundle, capsys, monkeypatch):
    root = digits_bundle[0]
    monkeypatch.chdir(root)
    assert check.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("reference: 32 images from val (labeled), PyTorch eca_resnet18 logits, 10 classes\n")
    assert out.splitlines()[2].startswith("files: PASS (")  # every bound file is the one that was bundled
    header = out.splitlines()[3].split()
    assert header == ["artifact", "runner", "precision", "top-1", "measured", "allowed", "reached", "cosine",
                      "measured", "allowed", "reached", "kernels", "p50", "ms", "verdict"]
    assert out.splitlines()[1].startswith("preprocessing: PASS on 16 probe images decoded here: 8 JPEG: ")
    assert sum(line.endswith(" PASS") for line in out.splitlines()) == 3
    assert out.rstrip().endswith("3 passed, 0 failed, 0 skipped")


def _export_other_weights(path):
    """The same architecture, size and classes from other (random) weights: what a mixed-up file looks like."""
    from exporter import export_model
    export_model("eca_resnet18", path, num_classes=10, input_size=32, stem_width=16, do_simplify=False,
                 parity_batch_sizes=(1,))
    return path


def test_model_from_other_weights_fails(digits_bundle, tmp_path):
    root = digits_bundle[0]
    device = copy_bundle(root, tmp_path)
    _export_other_weights(os.path.join(device, "eca_digits.int8.tensorrt.onnx"))
    proc = run_check(device, tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "1 of 3 artifacts failed the check against PyTorch: eca_digits.int8.tensorrt.onnx" in proc.stderr
    swapped = next(a for a in json.loads(proc.stdout)["artifacts"] if a["name"] == "eca_digits.int8.tensorrt.onnx")
    assert swapped["status"] == "FAIL"
    assert any("made from other weights" in reason for reason in swapped["reasons"])
    assert any(reason.startswith("cosine") for reason in swapped["reasons"])  # the numbers give it away too


def test_corrupted_weights_fail_on_the_numbers_alone(digits_bundle, tmp_path):
    """Same metadata, so provenance cannot tell: two classes' rows of the classifier swapped in the INT8 model."""
    import onnx
    from onnx import numpy_helper
    root = digits_bundle[0]
    device = copy_bundle(root, tmp_path)
    path = os.path.join(device, "eca_digits.int8.tensorrt.onnx")
    model = onnx.load(path)
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    initializers = {i.name: i for i in model.graph.initializer}
    bias = initializers[gemm.input[2]]
    values = numpy_helper.to_array(bias).copy()
    values[[1, 7]] = values[[7, 1]] + np.array([8.0, -8.0], dtype=values.dtype)
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(model, path)
    proc = run_check(device, tmp_path)
    assert proc.returncode == 1, proc.stderr
    corrupted = next(a for a in json.loads(proc.stdout)["artifacts"] if a["name"] == "eca_digits.int8.tensorrt.onnx")
    assert corrupted["status"] == "FAIL" and not any("weights" in r for r in corrupted["reasons"])
    assert any(r.startswith("top-1 agreement") or r.startswith("cosine") for r in corrupted["reasons"])


def test_engine_without_tensorrt_is_skipped_with_the_reason(digits_bundle, tmp_path):
    root = digits_bundle[0]
    device = copy_bundle(root, tmp_path)
    with open(os.path.join(device, "eca_digits.onnx.json")) as handle:
        sidecar = json.load(handle)
    sidecar["source_onnx"] = {"sha256": sidecar["sha256"]}  # what deploy.build records: built from a bundled model
    with open(os.path.join(device, "eca_digits.engine.json"), "w") as handle:
        json.dump(sidecar, handle)
    open(os.path.join(device, "eca_digits.engine"), "wb").close()
    proc = run_check(device, tmp_path, blocked=BLOCKED + ["tensorrt"])
    assert proc.returncode == 0, proc.stderr
    engine = json.loads(proc.stdout)["artifacts"][-1]
    assert engine["name"] == "eca_digits.engine" and engine["status"] == "SKIP"
    assert engine["reasons"] == ["TensorRT is not importable here (engines run only where they were built)"]


def test_nothing_runnable_is_an_error(digits_bundle, tmp_path):
    """Without onnxruntime and without engines nothing ran: that is not a pass."""
    root = digits_bundle[0]
    proc = run_check(copy_bundle(root, tmp_path), tmp_path, blocked=BLOCKED + ["onnxruntime"])
    assert proc.returncode == 2
    assert "error: nothing could run here, so none of the 3 artifacts was checked against PyTorch: onnxruntime " \
           "is not installed here (pip install onnxruntime); the preprocessing was checked (PASS)" in proc.stderr
    assert all(a["status"] == "SKIP" for a in json.loads(proc.stdout)["artifacts"])


def test_nothing_runnable_says_so_in_one_line(digits_bundle, tmp_path):
    """Without --json the user reads one line: what was checked, what was not and why; no SKIP table before it."""
    root = digits_bundle[0]
    proc = run_check(copy_bundle(root, tmp_path), tmp_path, blocked=BLOCKED + ["onnxruntime"], as_json=False)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("blocked import: ")]
    assert len(lines) == 1 and lines[0].startswith("error: nothing could run here, so none of the 3 artifacts")
    assert "engine is checked instead" not in lines[0] and "(PASS)" in lines[0]


def test_bundle_without_reference(tiny_imagenet_onnx, tmp_path, capsys):
    from bundling.bundle import bundle
    root = bundle([tiny_imagenet_onnx], tmp_path / "plain").output
    assert check.main([root]) == 2
    assert "no reference data" in capsys.readouterr().err
    with pytest.raises(UserError, match="no such bundle folder"):
        check.check_bundle(str(tmp_path / "missing"))


@pytest.mark.tensorrt
def test_engines_built_on_the_device_pass(digits_bundle, tmp_path):
    """Needs TensorRT and a GPU: build every engine with the bundle's own script, then check them."""
    import subprocess
    device = copy_bundle(digits_bundle[0], tmp_path)
    subprocess.run(["sh", "build_engines.sh"], cwd=device, check=True)
    proc = run_check(device, tmp_path)
    assert proc.returncode == 0, proc.stderr
    engines = [a for a in json.loads(proc.stdout)["artifacts"] if a["kind"] == "engine"]
    assert len(engines) == 3 and all(a["status"] == "PASS" and a["runner"]["backend"] == "tensorrt"
                                     for a in engines)


def test_help_and_options_anywhere(digits_bundle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        check.main(["--help"])
    assert exit_info.value.code == 0 and "usage: python -m deploy.check" in capsys.readouterr().out
    assert check.main(["--json", digits_bundle[0], "--batch", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and {a["batch_size"] for a in report["artifacts"]} == {4}
