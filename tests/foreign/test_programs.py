"""A model this repository has no code for, saved as a program (.pt2, TorchScript) with its timm config, goes
through export, calibrate, benchmark-engine, bundle and deploy.check; never importing timm."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import onnx
import pytest
import torch

from deploy.errors import UserError
from deploy.fileio import sha256_file
from deploy.metadata import read_model_info
from models.program import archive_kind, load_program, program_name
from tests.foreign.conftest import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[-1]


def test_the_archive_says_what_it_is(foreign_programs, tmp_path):
    assert archive_kind(foreign_programs["pt2"]) == "torch.export"
    assert archive_kind(foreign_programs["torchscript"]) == "torchscript"
    whole = tmp_path / "whole.pt"
    torch.save(torch.nn.Linear(2, 2), whole)  # a pickled whole model: loading it would run code
    assert archive_kind(whole) == "torch.save"
    with pytest.raises(UserError, match="pickled whole model is refused"):
        load_program(whole)
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="neither a torch.export"):
        load_program(junk)
    assert program_name("a/ecaresnet50d.pt2") == "ecaresnet50d"
    assert program_name("x/$(rm -rf ~);.pt2") == "rm_-rf"


def test_pickled_whole_model_is_refused_by_export(tmp_path):
    whole = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), whole)
    result = run_cli(["export", whole, "-o", tmp_path / "m.onnx"])
    assert result.exit_code == 2
    assert "pickled whole model is refused" in _error_line(result)
    assert not (tmp_path / "m.onnx").exists()


def test_pt2_export_is_stamped_and_held_to_the_program(exported_program, foreign_programs):
    path, payload = exported_program
    assert payload["parity"]["passed"] and payload["parity"]["max_abs_error"] <= 1e-4
    info = read_model_info(path)
    assert info.source_kind == "torch.export" and info.from_program
    assert info.checkpoint_sha256 == sha256_file(foreign_programs["pt2"])
    assert info.arch == "ecaresnet_digits" and info.num_classes == 10
    # timm's arithmetic: floor(32 / 0.875) = 36 (round would give 37), and its bicubic filter
    assert (info.preprocess.input_size, info.preprocess.resize_size, info.preprocess.interpolation) == (32, 36,
                                                                                                         "bicubic")
    model = onnx.load(path)
    assert model.ir_version == 8 and [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # ECA gates found by their computation; their Expand dropped (the lean form)
    assert payload["attention_form"]["eca_gates"] == 3 and "Expand" not in payload["ops"]


def test_torchscript_export_and_nchwc(foreign_programs, tmp_path):
    result = run_cli(["export", foreign_programs["torchscript"], "--timm-config", foreign_programs["config"],
                      "--attention-form", "nchwc", "-o", tmp_path / "ts.onnx", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["parity"]["max_abs_error"] <= 1e-4
    assert read_model_info(tmp_path / "ts.onnx").source_kind == "torchscript"
    assert payload["attention_form"]["eca_gates"] == 3


def test_torchscript_needs_a_size(foreign_programs, tmp_path):
    result = run_cli(["export", foreign_programs["torchscript"], "-o", tmp_path / "ts.onnx"])
    assert result.exit_code == 2 and "--input-size or --timm-config" in _error_line(result)
    result = run_cli(["export", foreign_programs["pt2"], "--input-size", "64", "-o", tmp_path / "x.onnx"])
    assert result.exit_code == 2 and "exported for 32x32 images" in _error_line(result)
    result = run_cli(["export", foreign_programs["pt2"], "--weights", foreign_programs["pt2"], "-o",
                      tmp_path / "y.onnx"])
    assert result.exit_code == 2 and "carries its own weights" in _error_line(result)


def test_explicit_flags_override_the_timm_config(foreign_programs, tmp_path):
    result = run_cli(["export", foreign_programs["torchscript"], "--timm-config", foreign_programs["config"],
                      "--resize", "40", "--interpolation", "bilinear", "-o", tmp_path / "o.onnx"])
    assert result.exit_code == 0, result.output
    spec = read_model_info(tmp_path / "o.onnx").preprocess
    assert (spec.resize_size, spec.interpolation) == (40, "bilinear")


def test_the_program_is_the_proof(calibrated_program, foreign_programs, digits_split, tmp_path):
    """The goal: benchmark against the program, bundle with its logits, deploy.check PASS, and the FP32 top-1
    equal to the program's own on the same images."""
    models = calibrated_program
    report = tmp_path / "report"
    result = run_cli(["benchmark-engine", models["fp32"], models["int8"], "--weights", foreign_programs["pt2"],
                      "--data", digits_split[1], "--num-images", 64, "--batch-sizes", 1, "--iterations", 1,
                      "--warmup", 0, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert "torch.export program" in payload["reference"]["name"]
    fp32 = payload["artifacts"][0]
    assert fp32["top1_accuracy"] == payload["reference"]["top1_accuracy"] and fp32["top1_agreement"] == 100.0
    assert payload["reference"]["top1_accuracy"] > 80  # trained: the figures mean something

    bundle = tmp_path / "bundle"
    result = run_cli(["bundle", models["fp32"], models["int8"], models["cache"], "--weights",
                      foreign_programs["pt2"], "--data", digits_split[1], "--reference-images", 64, "-o", bundle])
    assert result.exit_code == 0, result.output
    check = subprocess.run([sys.executable, "-m", "deploy.check", "--json"], cwd=str(bundle), capture_output=True,
                           text=True, env=dict(os.environ, PYTHONPATH=""))
    assert check.returncode == 0, check.stderr
    verdict = json.loads(check.stdout)
    assert [a["status"] for a in verdict["artifacts"]] == ["PASS", "PASS"]
    assert verdict["preprocessing"]["status"] == "PASS"  # the device's bicubic resize, on the probes
    assert verdict["reference"]["origin"] == "PyTorch"
    del report


def test_the_proof_needs_the_same_program(exported_program, foreign_programs, digits_split):
    fp32 = exported_program[0]
    result = run_cli(["benchmark-engine", fp32, "--weights", foreign_programs["torchscript"], "--data",
                      digits_split[1], "--num-images", 8, "--batch-sizes", 1, "--iterations", 1])
    assert result.exit_code == 2 and "is not the program" in _error_line(result)
    result = run_cli(["benchmark-engine", fp32, "--data", digits_split[1], "--num-images", 8, "--batch-sizes", 1])
    assert result.exit_code == 2 and "give that file with --weights" in _error_line(result)
    result = run_cli(["benchmark-engine", fp32, "--reference", "eca_resnet18", "--weights", foreign_programs["pt2"]])
    assert result.exit_code == 2 and "--reference names a zoo model" in _error_line(result)


def test_attention_of_a_program(exported_program, foreign_programs, digits_split, tmp_path):
    result = run_cli(["attention", foreign_programs["pt2"], "--data", digits_split[1], "--num-images", 40,
                      "--deployed", exported_program[0], "--out", tmp_path / "att", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [b["name"] for b in payload["models"][0]["blocks"]] == ["layer1.se", "layer2.se", "layer3.se"]
    assert payload["parity"] is not None
    result = run_cli(["attention", foreign_programs["torchscript"], "--data", digits_split[1], "--out",
                      tmp_path / "att2"])
    assert result.exit_code == 2 and "TorchScript module" in _error_line(result)


def test_onnx_from_elsewhere_has_its_fp32_onnx_as_reference(foreign_programs, digits_split, tmp_path):
    """An ONNX classifier with other tensor names: checked, simplified and stamped; every report names the FP32
    ONNX as the reference."""
    import warnings
    user = tmp_path / "user.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.jit.load(foreign_programs["torchscript"]), (torch.zeros(1, 3, 32, 32),), str(user),
                          dynamo=False, opset_version=17, input_names=["pixel_values"], output_names=["scores"],
                          dynamic_axes={"pixel_values": {0: "n"}, "scores": {0: "n"}})
    out = tmp_path / "u.onnx"
    result = run_cli(["export", user, "--timm-config", foreign_programs["config"], "-o", out])
    assert result.exit_code == 0, result.output
    assert "the original ONNX" in result.stderr
    info = read_model_info(out)
    assert info.source_kind == "onnx" and info.checkpoint_sha256 == sha256_file(user)
    result = run_cli(["benchmark-engine", out, "--data", digits_split[1], "--num-images", 16, "--batch-sizes", 1,
                      "--iterations", 1, "--warmup", 0])
    assert result.exit_code == 0, result.output
    assert "## Parity with the FP32 ONNX reference" in result.stdout
    assert "no PyTorch program" in result.stderr
    bundle = tmp_path / "bundle"
    result = run_cli(["bundle", out, "--data", digits_split[1], "--reference-images", 16, "-o", bundle])
    assert result.exit_code == 0, result.output
    assert "against the FP32 ONNX" in result.stdout
    check = subprocess.run([sys.executable, "-m", "deploy.check"], cwd=str(bundle), capture_output=True,
                           text=True, env=dict(os.environ, PYTHONPATH=""))
    assert check.returncode == 0, check.stderr
    assert "the FP32 ONNX user logits" in check.stdout and "agreement with the FP32 ONNX" in check.stdout
    result = run_cli(["export", out, "-o", tmp_path / "again.onnx"])
    assert result.exit_code == 2 and "eca-deploy export already" in _error_line(result)


def test_never_imports_timm():
    """The project runs programs without timm (which cannot load here) and never depends on it."""
    code = ("import sys, models.program, exporter.sources, analysis.attention.program; "
            "assert 'timm' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env=dict(os.environ, PYTHONPATH=ROOT))
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as handle:
        assert "timm" not in handle.read()
