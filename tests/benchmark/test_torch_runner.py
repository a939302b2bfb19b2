"""The PyTorch reference runner: same interface and clock as the deploy runners, no lasting side effects."""
import numpy as np
import pytest
import torch

import models
from benchmark.torch_runner import TorchRunner
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
