"""Session fixtures: a classifier this repository does not define (tests.foreign.timm_like), trained on the digits
and saved as a program the way a timm user saves one, and the models exported from it."""
import json
import os

import pytest
from click.testing import CliRunner

from cli import cli


def run_cli(args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="session")
def foreign_programs(tmp_path_factory, digits_split):
    """{"pt2", "torchscript", "config"} paths of the timm-like ECA ResNet trained on the digits (about 8 s)."""
    from tests.foreign.timm_like import save_programs, train
    return save_programs(train(digits_split[0]), str(tmp_path_factory.mktemp("foreign")))


@pytest.fixture(scope="session")
def exported_program(foreign_programs, tmp_path_factory):
    """The .pt2 exported with its timm config, and the --json payload of that export."""
    out = tmp_path_factory.mktemp("foreign_onnx") / "eca.onnx"
    result = run_cli(["export", foreign_programs["pt2"], "--timm-config", foreign_programs["config"], "-o", out,
                      "--json"])
    assert result.exit_code == 0, result.output
    return str(out), json.loads(result.stdout)


@pytest.fixture(scope="session")
def calibrated_program(exported_program, digits_split):
    """FP32, FP16 and TensorRT-target INT8 models of the program, calibrated on the training digits."""
    fp32 = exported_program[0]
    result = run_cli(["calibrate", fp32, "--data", digits_split[0], "--holdout-data", digits_split[1],
                      "--num-images", 64, "--holdout-images", 64, "--target", "tensorrt", "--trt-version", "10.3"])
    assert result.exit_code == 0, result.output
    stem = os.path.splitext(fp32)[0]
    return {"fp32": fp32, "fp16": stem + ".fp16.onnx", "int8": stem + ".int8.tensorrt.onnx",
            "cache": stem + ".calib.cache"}
