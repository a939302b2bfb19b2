"""Checkpoint loading: wrappers and prefixes, shapes read from tensors, clear mismatches, unsafe pickles refused."""
import os
import pickle

import pytest
import torch

import models
from deploy.errors import UserError


def _save(obj, path):
    torch.save(obj, path)
    return str(path)


def _small(name, **options):
    torch.manual_seed(1)
    return models.create_model(name, num_classes=10, stem_width=16, **options)


def test_raw_state_dict_loads(tmp_path):
    source = _small("eca_resnet18")
    path = _save(source.state_dict(), tmp_path / "raw.pth")
    model, checkpoint = models.load_model("eca_resnet18", path)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(model(x), source(x))
    assert len(checkpoint.sha256) == 64


def test_official_training_checkpoint_with_module_prefix(tmp_path):
    source = _small("eca_resnet18")
    wrapped = {"state_dict": {"module." + k: v for k, v in source.state_dict().items()},
               "arch": "eca_resnet18", "epoch": 90, "best_prec1": 70.92}
    model, checkpoint = models.load_model("eca_resnet18", _save(wrapped, tmp_path / "train.pth.tar"))
    assert checkpoint.arch == "eca_resnet18"
    assert torch.equal(model.layer1[0].eca.conv.weight, source.layer1[0].eca.conv.weight)


def test_kernel_sizes_and_classes_come_from_tensor_shapes(tmp_path):
    # Trained with the adaptive rule and 10 classes; the default build uses k3577 and 1000 classes.
    source = _small("eca_resnet18", k_size=(9, 1, 3, 5))
    model, _ = models.load_model("eca_resnet18", _save(source.state_dict(), tmp_path / "k.pth"))
    assert [model.layer1[0].eca.k_size, model.layer2[1].eca.k_size, model.layer3[0].eca.k_size,
            model.layer4[1].eca.k_size] == [9, 1, 3, 5]
    assert model.fc.out_features == 10


def test_stacked_eca_convs_are_detected(tmp_path):
    source = _small("eca_resnet18", num_convs=2)
    model, _ = models.load_model("eca_resnet18", _save(source.state_dict(), tmp_path / "stack.pth"))
    assert len(model.layer1[0].eca.extra_convs) == 1


def test_mobilenet_kernel_one_and_three(tmp_path):
    source = models.create_model("eca_mobilenet_v2", num_classes=5, k_size="adaptive")
    model, _ = models.load_model("eca_mobilenet_v2", _save(source.state_dict(), tmp_path / "m.pth"))
    assert model.features[1].conv[3].k_size == source.features[1].conv[3].k_size
    assert model.classifier[1].out_features == 5


def test_checkpoint_for_another_architecture_names_the_keys(tmp_path):
    path = _save(_small("se_resnet18").state_dict(), tmp_path / "se.pth")
    with pytest.raises(UserError) as info:
        models.load_model("eca_resnet18", path)
    message = str(info.value)
    assert "missing keys" in message and "layer1.0.eca.conv.weight" in message
    assert "unexpected keys" in message and "layer1.0.se.fc.0.weight" in message
    assert "\n" not in message


def test_shape_mismatch_is_reported(tmp_path):
    path = _save(_small("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(UserError, match="shape mismatches"):
        models.load_model("resnet18", path, stem_width=32)


def test_num_classes_conflict(tmp_path):
    path = _save(_small("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(UserError, match="10 classes"):
        models.load_model("resnet18", path, num_classes=1000)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        models.load_model("resnet18", str(tmp_path / "nope.pth"))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x02 this is not a checkpoint")
    with pytest.raises(UserError):
        models.load_model("resnet18", str(corrupt))
    truncated = tmp_path / "truncated.pth"
    _save(_small("resnet18").state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(UserError):
        models.load_model("resnet18", str(truncated))


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch {}".format(self.marker),))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {"fc.weight": _Exploit(str(marker))}}, handle)
    with pytest.raises(UserError, match="refusing"):
        models.load_model("resnet18", str(path))
    assert not marker.exists()
    torch_path = tmp_path / "evil_torch.pth"
    torch.save({"fc.weight": _Exploit(str(marker))}, torch_path)
    with pytest.raises(UserError, match="refusing"):
        models.load_model("resnet18", str(torch_path))
    assert not marker.exists()


def test_non_dict_and_tensorless_checkpoints(tmp_path):
    with pytest.raises(UserError, match="not a state dict"):
        models.load_model("resnet18", _save([1, 2, 3], tmp_path / "list.pth"))
    with pytest.raises(UserError, match="no tensors"):
        models.load_model("resnet18", _save({"epoch": 3}, tmp_path / "empty.pth"))


@pytest.mark.parametrize("width", [0.25, 0.5, 0.75, 1.4])
def test_mobilenet_width_comes_from_tensor_shapes(tmp_path, width):
    """A narrow or wide ECA-MobileNetV2 checkpoint loads by name alone, as benchmark-engine and bundle load it."""
    torch.manual_seed(1)
    source = models.create_model("eca_mobilenet_v2", num_classes=10, width_mult=width).eval()
    path = _save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}},
                 tmp_path / "mbv2.pth")
    model, _ = models.load_model("eca_mobilenet_v2", path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), source(x))
