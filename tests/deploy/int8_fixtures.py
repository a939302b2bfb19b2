"""INT8 models of both targets made by the project itself (cli.py calibrate's code on real digits), shared by the
TensorRT plan and conformance tests: the TensorRT target (INT8 Q/DQ, zero point 0) and the CPU target (ONNX
Runtime's UINT8 activations with zero points), which no TensorRT parses."""
import shutil

import pytest


@pytest.fixture(scope="session")
def digits_int8_models(digits_split, digits_eca_onnx, tmp_path_factory):
    """{"tensorrt": path, "cpu": path}: the digits ECA-ResNet-18 calibrated on 64 training digits."""
    from calibration.api import calibrate

    model = str(tmp_path_factory.mktemp("int8") / "eca_digits.onnx")
    shutil.copy(digits_eca_onnx, model)
    result = calibrate(model, data_dir=digits_split[0], targets=("tensorrt", "cpu"), method="minmax",
                       num_images=64, fp16=False, progress=False)
    return dict(result.int8_models)
