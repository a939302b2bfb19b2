"""`cli.py build` and `cli.py bundle` (and `python -m deploy.build`): one library function behind two fronts.

No TensorRT runs here: the build tests check the dry run, the one-line errors (TensorRT missing, bad options,
options the running version lacks, over a fake ``tensorrt`` module); the real builds are in
tests/deploy/test_tensorrt_engine.py.
"""
import json
import os
import sys

import pytest
from click.testing import CliRunner

import cli
from deploy import build as deploy_build
from tests.fake_tensorrt import DESKTOP11, JETPACK5, install


def invoke(*args):
    return CliRunner().invoke(cli.cli, list(args), prog_name="cli.py")


def error_lines(result):
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def test_build_help_lists_every_option():
    result = invoke("build", "--help")
    assert result.exit_code == 0
    for flag in ("--precision [fp32|fp16|int8]", "--implicit-int8", "--dry-run", "--trt-version", "--min-batch",
                 "--opt-batch", "--max-batch", "--workspace", "--timing-cache", "--dla-core",
                 "--gpu-fallback", "--opt-level", "--version-compatible", "--hardware-compatible", "--calib-cache",
                 "--json", "-o, --output"):
        assert flag in result.output, flag


def test_build_without_tensorrt_says_what_to_install(tiny_imagenet_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    result = invoke("build", tiny_imagenet_onnx)
    assert result.exit_code == 2
    (line,) = error_lines(result)
    assert line.startswith("error: TensorRT's Python package (tensorrt) is required to build TensorRT engines; ")
    assert "JetPack" in line and "do not pip install it" in line


@pytest.mark.parametrize("args,message", [
    (["--min-batch", "8", "--max-batch", "2"], "--min-batch (8) <= --opt-batch (8) <= --max-batch (2)"),
    (["--gpu-fallback"], "--gpu-fallback only applies together with --dla-core"),
    (["--opt-level", "9"], "--opt-level must be between 0 and 5"),
    (["--implicit-int8", "--calib-cache", "missing.cache"], "no such calibration cache"),
    (["--calib-cache", "x.cache"], "--calib-cache is only for --implicit-int8"),
])
def test_bad_options_fail_before_tensorrt_is_needed(tiny_imagenet_onnx, monkeypatch, args, message):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    result = invoke("build", tiny_imagenet_onnx, *args)
    assert result.exit_code == 2 and message in error_lines(result)[0]


def test_version_dispatch_through_the_cli(tiny_imagenet_onnx, tmp_path, monkeypatch):
    """Over a fake TensorRT (no TensorRT runs): options a version lacks fail in one line, on both fronts."""
    install(monkeypatch, JETPACK5)
    result = invoke("build", tiny_imagenet_onnx, "--version-compatible")
    assert result.exit_code == 2
    assert error_lines(result) == ["error: --version-compatible needs TensorRT 8.6 or newer; this plan is for "
                                   "TensorRT 8.5.2.2"]
    cache = tmp_path / "m.cache"
    cache.write_text("TRT-110400-EntropyCalibration2\ninput: 3c010204\n")
    install(monkeypatch, DESKTOP11)
    args = [tiny_imagenet_onnx, "--implicit-int8", "--calib-cache", str(cache)]
    result = invoke("build", *args)
    assert result.exit_code == 2 and "was removed in TensorRT 11.0" in error_lines(result)[0]
    assert deploy_build.main(args) == 2  # the same on the target


def test_dry_run_json_without_tensorrt_on_both_fronts(tiny_imagenet_onnx, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    result = invoke("build", tiny_imagenet_onnx, "--dry-run", "--trt-version", "8.6", "--precision", "fp16",
                    "--json")
    assert result.exit_code == 0, result.output
    (engine,) = json.loads(result.output)["engines"]
    assert engine["precision"] == "fp16" and engine["trt_flags"] == ["FP16"] and engine["trt_version"] == "8.6.0"
    assert engine["engine"].endswith("tiny_eca.fp16.engine") and engine["onnx"] == tiny_imagenet_onnx
    assert engine["trtexec"].startswith("trtexec --onnx=") and " --fp16 " in engine["trtexec"]
    assert engine["polygraphy"].startswith("polygraphy convert ")
    assert deploy_build.main([tiny_imagenet_onnx, "--dry-run", "--trt-version", "8.6", "--precision", "fp16",
                              "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["engines"] == [engine]  # the same plan on the target
    result = invoke("build", tiny_imagenet_onnx, "--dry-run")
    assert result.exit_code == 0 and "fp32 on TensorRT 10.3.0 [STRONGLY_TYPED]" in result.output


def test_deploy_build_entry_point(tiny_imagenet_onnx, monkeypatch, capsys):
    with pytest.raises(SystemExit) as info:
        deploy_build.main(["--help"])
    assert info.value.code == 0 and "--calib-cache" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert deploy_build.main([tiny_imagenet_onnx, "--max-batch", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: TensorRT's Python package (tensorrt) is required")


def test_bundle_command(tiny_imagenet_onnx, tmp_path):
    # random weights of a narrow model cannot be rebuilt in PyTorch, so this bundle carries no reference data
    result = invoke("bundle", tiny_imagenet_onnx, "-o", str(tmp_path / "b.tar.gz"), "--max-batch", "2", "--json",
                    "--no-reference")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["kind"] == "tar.gz" and payload["models"] == ["tiny_eca.onnx"]
    assert payload["build_commands"] == ["python3 -m deploy.build tiny_eca.onnx -o tiny_eca.fp32.engine "
                                         "--max-batch 2"]
    assert os.path.isfile(str(tmp_path / "b.tar.gz"))

    result = invoke("bundle", tiny_imagenet_onnx, "-o", str(tmp_path / "folder"), "--no-reference")
    assert result.exit_code == 0 and "sh build_engines.sh" in result.output
    result = invoke("bundle", tiny_imagenet_onnx, "-o", str(tmp_path / "folder"), "--no-reference")
    assert result.exit_code == 2 and "--force" in error_lines(result)[0]
