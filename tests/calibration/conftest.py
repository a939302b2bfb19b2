"""Fixtures of the calibration tests: a digits ECA-MobileNetV2 (depthwise convolutions, harder to quantize than
the ECA-ResNet-18) and the digits calibration images as the calibrate stage loads them."""
import pytest


@pytest.fixture(scope="session")
def digits_mobilenet_onnx(tmp_path_factory, digits_split):
    """A narrow ECA-MobileNetV2 (width 0.25) trained on the digits for a few epochs, exported at 32x32."""
    import torch
    from exporter import export_model
    from tests.digits import INPUT_SIZE, save_state_dict, train_digits_model
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # depthwise backward oversubscribes on a shared 2-core machine: 10x slower
    try:
        model = train_digits_model("eca_mobilenet_v2", digits_split[0], epochs=5, stem_width=None, lr=1e-2,
                                   width_mult=0.25)
    finally:
        torch.set_num_threads(threads)
    folder = tmp_path_factory.mktemp("eca_mobilenet_v2")
    checkpoint = save_state_dict(model, str(folder / "eca_mobilenet_v2.pth"))
    path = str(folder / "mbv2_digits.onnx")
    result = export_model("eca_mobilenet_v2", path, weights=checkpoint, input_size=INPUT_SIZE, width_mult=0.25,
                          parity_batch_sizes=(2,))
    assert result.parity, result.parity.to_dict()
    return path


@pytest.fixture(scope="session")
def digits_calibration_images(digits_split, digits_eca_onnx, tmp_path_factory):
    """512 class-balanced training digits, preprocessed as the digits models expect (both take 32x32)."""
    from calibration.data import load_dataset
    from deploy.metadata import read_model_info
    spec = read_model_info(digits_eca_onnx).preprocess
    return load_dataset(digits_split[0], spec, num_images=512, seed=0,
                        cache_dir=str(tmp_path_factory.mktemp("calib-images")), progress=False)
