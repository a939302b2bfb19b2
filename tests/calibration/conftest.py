"""Fixtures of the calibration tests: the digits calibration images as the calibrate stage loads them."""
import pytest


@pytest.fixture(scope="session")
def digits_calibration_images(digits_split, digits_eca_onnx, tmp_path_factory):
    """512 class-balanced training digits, preprocessed as the digits models expect (both take 32x32)."""
    from data.datasets import load_dataset
    from deploy.metadata import read_model_info
    spec = read_model_info(digits_eca_onnx).preprocess
    return load_dataset(digits_split[0], spec, num_images=512, seed=0,
                        cache_dir=str(tmp_path_factory.mktemp("calib-images")), progress=False)
