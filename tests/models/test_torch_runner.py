"""The PyTorch reference runner: same interface and clock as the deploy runners, no lasting side effects."""
import numpy as np
import pytest
import torch

import models
from models.torch_runner import TorchRunner
from deploy.errors import UserError
from deploy.images import sample_images
from deploy.preprocess import PreprocessSpec, preprocess_file


def test_torch_runner_matches_the_model_and_restores_threads():
    torch.manual_seed(0)
    model = models.create_model("eca_resnet18", num_classes=10, stem_width=16)
    spec = PreprocessSpec.for_input_size(64)
    batch = np.stack([preprocess_file(p, spec) for p in sample_images()[:3]])
    before = torch.get_num_threads()
    with TorchRunner(model, threads=1) as runner:
        assert torch.get_num_threads() == 1
        logits = runner.infer({"input": batch})["logits"]
        assert runner.describe()["threads"] == 1 and runner.describe()["backend"] == "pytorch"
        with pytest.raises(UserError, match="missing"):
            runner.infer({"images": batch})
    assert torch.get_num_threads() == before
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    np.testing.assert_array_equal(logits, expected)
    assert len(runner.inference_times) == 1 and runner.inference_times[0] > 0
    assert runner.compute_times == []  # compute-only time exists on CUDA devices only


def test_fp16_reference_runs_half_channels_last_on_a_copy():
    """The FP16 reference (what a GPU user compares an FP16 engine with) runs where torch has FP16 CPU kernels."""
    torch.manual_seed(0)
    model = models.create_model("eca_resnet18", num_classes=10, stem_width=16)
    spec = PreprocessSpec.for_input_size(64)
    batch = np.stack([preprocess_file(p, spec) for p in sample_images()[:4]])
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    with TorchRunner(model, threads=1, precision="fp16") as runner:
        logits = runner.infer({"input": batch})["logits"]
        info = runner.describe()
    assert logits.dtype == np.float32 and info["precision"] == "fp16" and info["memory_format"] == "channels_last"
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is untouched
    np.testing.assert_allclose(logits, expected, atol=2e-2 * np.abs(expected).max())
    assert (logits.argmax(1) == expected.argmax(1)).all()
    with pytest.raises(UserError, match="fp32 or fp16"):
        TorchRunner(model, precision="int8")


@pytest.mark.gpu
def test_cuda_reference_switches_tf32_off_and_restores_it():
    if not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA GPU")
    model = models.create_model("eca_resnet18", num_classes=10, stem_width=16)
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        batch = np.zeros((2, 3, 32, 32), np.float32)
        for precision, graph in (("fp32", False), ("fp16", False), ("fp16", True)):
            with TorchRunner(model, device="cuda", precision=precision, use_cuda_graph=graph) as runner:
                assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
                runner.infer({"input": batch})
                runner.infer({"input": batch})
                assert len(runner.compute_times) == 2
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
