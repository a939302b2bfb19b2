"""Shared fixtures, and the rule that TensorRT/GPU tests skip with a stated reason when the hardware is absent."""
import importlib.util
import json
import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _tensorrt_missing_reason():
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt Python package is not installed (TensorRT cannot run on this machine)"
    return None


def _gpu_missing_reason():
    if shutil.which("nvidia-smi") is None and not os.path.exists("/dev/nvidia0"):
        return "no NVIDIA GPU on this machine"
    if importlib.util.find_spec("polygraphy") is None:
        return "Polygraphy (our CUDA and TensorRT backend) is not installed"
    return None


def pytest_collection_modifyitems(config, items):
    reasons = {"tensorrt": _tensorrt_missing_reason(), "gpu": _gpu_missing_reason()}
    for item in items:
        for marker, reason in reasons.items():
            if reason and item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))


# -- real data: scikit-learn's digits as ImageFolder trees, and small networks trained on them --------------

@pytest.fixture(scope="session")
def digits_split(tmp_path_factory):
    """(train_dir, val_dir): ImageFolder trees of upscaled RGB digits, a fixed 67/33 split."""
    from tests.digits import make_digits_split
    return make_digits_split(str(tmp_path_factory.mktemp("digits")))


def _trained_checkpoint(tmp_path_factory, digits_split, arch):
    from tests.digits import save_state_dict, train_digits_model
    model = train_digits_model(arch, digits_split[0])
    return save_state_dict(model, str(tmp_path_factory.mktemp(arch) / "{}.pth".format(arch)))


@pytest.fixture(scope="session")
def digits_eca_checkpoint(tmp_path_factory, digits_split):
    """An official-format training checkpoint (module. prefixes) of a narrow ECA-ResNet-18 trained on digits."""
    return _trained_checkpoint(tmp_path_factory, digits_split, "eca_resnet18")


@pytest.fixture(scope="session")
def digits_se_checkpoint(tmp_path_factory, digits_split):
    return _trained_checkpoint(tmp_path_factory, digits_split, "se_resnet18")


@pytest.fixture(scope="session")
def digits_eca_onnx(tmp_path_factory, digits_eca_checkpoint):
    """The FP32 ONNX export (dynamic batch, 32x32 input) of the digits ECA model."""
    from exporter import export_model
    from tests.digits import INPUT_SIZE
    path = str(tmp_path_factory.mktemp("onnx") / "eca_digits.onnx")
    result = export_model("eca_resnet18", path, weights=digits_eca_checkpoint, input_size=INPUT_SIZE)
    assert result.parity, result.parity.to_dict()
    return path


@pytest.fixture(scope="session")
def digits_eca_in_graph_onnx(tmp_path_factory, digits_eca_checkpoint):
    """The same digits model exported with --normalize-in-graph: it takes RGB pixels in [0, 255]."""
    from exporter import export_model
    from tests.digits import INPUT_SIZE
    path = str(tmp_path_factory.mktemp("onnx_in_graph") / "eca_digits_in_graph.onnx")
    result = export_model("eca_resnet18", path, weights=digits_eca_checkpoint, input_size=INPUT_SIZE,
                          preprocess_options={"normalize_in_graph": True})
    assert result.parity, result.parity.to_dict()
    return path


@pytest.fixture(scope="session")
def digits_mobilenet_onnx(tmp_path_factory, digits_split):
    """A narrow ECA-MobileNetV2 (width 0.25) trained on the digits for a few epochs, exported at 32x32.

    Its depthwise convolutions make it harder to quantize than the ECA-ResNet-18: the calibration methods differ
    on it, as on the issue's MobileNetV2.
    """
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
def tiny_imagenet_onnx(tmp_path_factory):
    """A fast 1000-class ONNX model (narrow ECA-ResNet-18, random weights, 32x32, dynamic batch) with metadata."""
    from exporter import export_model
    path = str(tmp_path_factory.mktemp("tiny_onnx") / "tiny_eca.onnx")
    result = export_model("eca_resnet18", path, input_size=32, stem_width=16, do_simplify=False,
                          parity_batch_sizes=(2,))
    assert result.parity, result.parity.to_dict()
    return path


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Tests never read or fill the user's ~/.cache/eca-deploy (e.g. the calibration image cache)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ECA_DEPLOY_CACHE", str(tmp_path_factory.mktemp("eca-deploy-cache")))
        yield


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
