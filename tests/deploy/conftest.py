"""A digits bundle with reference data, made once through `cli.py bundle` and shared by the bundle and check tests."""
import json
import shutil

import pytest


@pytest.fixture(scope="session")
def digits_bundle(digits_split, digits_eca_onnx, digits_eca_checkpoint, tmp_path_factory):
    """(bundle folder, the models that went in, the command's --json payload): the FP32, FP16 and INT8 (TensorRT
    Q/DQ) models of the digits ECA-ResNet-18, with PyTorch's logits for 32 held-out digits."""
    from click.testing import CliRunner

    import cli
    from calibration.api import calibrate

    folder = tmp_path_factory.mktemp("models")
    model = str(folder / "eca_digits.onnx")
    shutil.copy(digits_eca_onnx, model)
    result = calibrate(model, data_dir=digits_split[0], num_images=128, progress=False)
    models = [model, result.fp16_model, result.int8_models["tensorrt"]]
    output = str(tmp_path_factory.mktemp("bundle") / "digits")
    invoked = CliRunner().invoke(cli.cli, ["bundle"] + models + [
        "--weights", digits_eca_checkpoint, "--data", digits_split[1], "--reference-images", "32", "-o", output,
        "--json"], prog_name="cli.py")
    assert invoked.exit_code == 0, invoked.output
    return output, models, json.loads(invoked.stdout)
