"""The one output guard: no command may write over one of its inputs, through a link or not, into an input
folder, or replace a folder that holds an input. Each refusal is one line naming the input, exit 2, before any
work, and the input is byte for byte what it was."""
import hashlib
import os
import shutil
import subprocess
import sys
import time

import pytest

from deploy.errors import UserError
from deploy.validate import check_outputs_spare_inputs
from tests.faults.conftest import assert_user_error, listing, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _sha(path) -> str:
    with open(str(path), "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_export_refuses_to_overwrite_its_checkpoint(tiny_checkpoint, tmp_path):
    checkpoint = str(tmp_path / "ck.pth")
    shutil.copy(tiny_checkpoint, checkpoint)
    before = _sha(checkpoint)
    result = run_cli(["export", "eca_resnet18", "--weights", checkpoint, "-o", checkpoint])
    assert_user_error(result, "would overwrite the input --weights", "ck.pth")
    assert _sha(checkpoint) == before and os.listdir(str(tmp_path)) == ["ck.pth"]


@pytest.mark.parametrize("given,output", [("link.onnx", "real.onnx"), ("real.onnx", "link.onnx")])
def test_calibrate_sees_through_a_link_to_its_model(model_copy, images, given, output):
    folder = os.path.dirname(model_copy)
    os.rename(model_copy, os.path.join(folder, "real.onnx"))
    os.symlink("real.onnx", os.path.join(folder, "link.onnx"))
    before = listing(folder)
    result = run_cli(["calibrate", os.path.join(folder, given), "--data", images, "-o", os.path.join(folder, output),
                      "--workers", "0"])
    assert_user_error(result, "would overwrite the input MODEL", "real.onnx")
    assert listing(folder) == before and os.path.islink(os.path.join(folder, "link.onnx"))


def test_compare_layers_refuses_a_plot_over_a_model(model_copy, images):
    other = os.path.join(os.path.dirname(model_copy), "other.onnx")
    shutil.copy(model_copy, other)
    before = listing(os.path.dirname(model_copy))
    result = run_cli(["compare-layers", model_copy, other, "--data", images, "--plot", model_copy])
    assert_user_error(result, "--plot", "would overwrite the input FP32_MODEL")
    assert listing(os.path.dirname(model_copy)) == before


@pytest.mark.parametrize("where", ["same", "inside"])
def test_attention_refuses_to_write_into_its_data(images, where):
    out = images if where == "same" else os.path.join(images, "attention")
    before = listing(images)
    result = run_cli(["attention", "eca_resnet18", "--data", images, "--input-size", "32", "--out", out])
    assert_user_error(result, "--out", "the input folder --data")
    assert listing(images) == before and sorted(os.listdir(images)) == sorted(before)


def test_benchmark_report_inside_the_data_folder_is_refused(model_copy, images):
    before = listing(images)
    result = run_cli(["benchmark-engine", model_copy, "--data", images, "--report", os.path.join(images, "report")])
    assert_user_error(result, "--report", "lies inside the input folder --data")
    assert listing(images) == before


def test_bundle_refuses_to_replace_its_checkpoint(model_copy, tiny_checkpoint, tmp_path):
    checkpoint = str(tmp_path / "ck.pth")
    shutil.copy(tiny_checkpoint, checkpoint)
    before = _sha(checkpoint)
    result = run_cli(["bundle", model_copy, "--weights", checkpoint, "-o", checkpoint, "--force"])
    assert_user_error(result, "would overwrite the input --weights")
    assert _sha(checkpoint) == before


def test_build_refuses_a_timing_cache_that_is_its_model(model_copy):
    before = _sha(model_copy)
    result = run_cli(["build", model_copy, "--dry-run", "--timing-cache", model_copy])
    assert_user_error(result, "--timing-cache", "would overwrite the input MODEL")
    assert _sha(model_copy) == before


def test_pipeline_bundle_over_its_own_out_fails_at_once(tmp_path):
    out = str(tmp_path / "run")
    started = time.perf_counter()
    result = run_cli(["pipeline", "eca_resnet18", "--input-size", "32", "--out", out, "--bundle", out])
    assert_user_error(result, "--bundle", "would replace the folder that holds the input --out")
    assert time.perf_counter() - started < 30 and not os.path.exists(out)  # refused before any step ran


def test_pipeline_out_inside_its_data_is_refused(images):
    before = listing(images)
    result = run_cli(["pipeline", "eca_resnet18", "--data", images, "--out", os.path.join(images, "run")])
    assert_user_error(result, "--out", "lies inside the input folder --data")
    assert listing(images) == before


def test_infer_engine_cache_inside_an_image_folder_is_refused(model_copy, images):
    proc = subprocess.run([sys.executable, "-m", "deploy.infer", model_copy, images, "--trt", "--engine-cache",
                           os.path.join(images, "engines")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
    assert "--engine-cache" in proc.stderr and "the input folder INPUTS" in proc.stderr
    assert not os.path.exists(os.path.join(images, "engines"))


def test_the_guard_itself(tmp_path):
    """Hard links are one file too; a folder replaced whole may not hold an input; unrelated paths pass."""
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    os.link(str(model), str(tmp_path / "hard.onnx"))
    with pytest.raises(UserError, match="would overwrite the input MODEL"):
        check_outputs_spare_inputs([("-o", str(tmp_path / "hard.onnx"))], [("MODEL", str(model))])
    with pytest.raises(UserError, match="would replace the folder that holds the input MODEL"):
        check_outputs_spare_inputs(replaced=[("-o", str(tmp_path))], inputs=[("MODEL", str(model))])
    check_outputs_spare_inputs([("-o", str(tmp_path / "out" / "m.int8.onnx")), ("--plot", None)],
                               [("MODEL", str(model)), ("--data", None), ("ARTIFACTS", [str(model)])])


def test_pipeline_refuses_a_bundle_folder_it_did_not_write_before_any_step(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("the user's")
    result = run_cli(["pipeline", "eca_resnet18", "--input-size", "32", "--out", tmp_path / "run", "--bundle", folder])
    assert_user_error(result, "--bundle", "exists", "no earlier run")
    assert listing(folder) == {"notes.txt": b"the user's"} and not (tmp_path / "run" / "eca_resnet18.onnx").exists()
