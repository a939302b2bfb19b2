"""The zoo: registry, ECA kernel rules, official key names, and equality with the official ECA layer."""
import pytest
import torch
from torch import nn

import models
from deploy.errors import UserError
from models.layers import ECALayer, adaptive_kernel_size

ALL_MODELS = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "se_resnet18", "se_resnet34", "se_resnet50",
    "cbam_resnet18", "cbam_resnet34", "cbam_resnet50",
    "eca_resnet18", "eca_resnet34", "eca_resnet50", "eca_resnet101", "eca_resnet152",
    "mobilenet_v2", "eca_mobilenet_v2",
]


def test_registry_has_the_whole_zoo():
    assert models.list_models() == sorted(ALL_MODELS)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UserError) as info:
        models.create_model("eca_resnet51")
    message = str(info.value)
    assert "did you mean eca_resnet50" in message
    assert all(name in message for name in ALL_MODELS)


def test_unknown_option_is_a_user_error():
    with pytest.raises(UserError, match="does not take"):
        models.create_model("resnet18", k_size=3)


@pytest.mark.parametrize("name", ["resnet18", "se_resnet18", "cbam_resnet18", "eca_resnet18", "eca_mobilenet_v2"])
def test_models_classify_a_batch(name):
    model = models.create_model(name, num_classes=7)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 7)
    assert model.arch == name and model.preprocess.input_size == 224


@pytest.mark.parametrize("channels, k", [(64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)])
def test_adaptive_kernel_rule(channels, k):
    assert adaptive_kernel_size(channels) == k


def _eca_kernels(model):
    return [m.k_size for m in model.modules() if isinstance(m, ECALayer)]


@pytest.mark.parametrize("name, stage_kernels", [
    ("eca_resnet18", (3, 5, 7, 7)), ("eca_resnet34", (3, 3, 5, 7)), ("eca_resnet50", (3, 5, 5, 7)),
    ("eca_resnet101", (3, 3, 5, 7)), ("eca_resnet152", (3, 3, 5, 7)),
])
def test_released_kernels_per_stage_by_default(name, stage_kernels):
    model = models.create_model(name)
    for stage, k in zip((model.layer1, model.layer2, model.layer3, model.layer4), stage_kernels):
        assert {block.eca.k_size for block in stage} == {k}


def test_adaptive_and_given_kernels():
    adaptive = models.create_model("eca_resnet50", k_size="adaptive")
    assert [adaptive.layer1[0].eca.k_size, adaptive.layer2[0].eca.k_size, adaptive.layer3[0].eca.k_size,
            adaptive.layer4[0].eca.k_size] == [5, 5, 5, 7]
    given = models.create_model("eca_resnet18", k_size=(1, 3, 5, 9))
    assert given.layer4[1].eca.k_size == 9
    with pytest.raises(UserError):
        models.create_model("eca_resnet18", k_size=(3, 4, 5, 7))


def test_eca_parameter_count_matches_the_paper():
    # 80 ECA parameters in ECA-ResNet-50 with k3557 (REFERENCE.md).
    model = models.create_model("eca_resnet50")
    assert sum(m.conv.weight.numel() for m in model.modules() if isinstance(m, ECALayer)) == 80


def test_stacked_convs_section_b():
    model = models.create_model("eca_resnet18", num_convs=3)
    eca = model.layer1[0].eca
    assert len(eca.extra_convs) == 2
    assert "layer1.0.eca.extra_convs.1.weight" in model.state_dict()


def test_official_key_names():
    keys = models.create_model("eca_resnet50").state_dict()
    assert keys["layer1.0.eca.conv.weight"].shape == (1, 1, 3)
    assert keys["layer4.2.eca.conv.weight"].shape == (1, 1, 7)
    assert "layer1.0.downsample.0.weight" in keys and "fc.weight" in keys
    mobile = models.create_model("eca_mobilenet_v2").state_dict()
    assert mobile["features.1.conv.3.conv.weight"].shape == (1, 1, 1)  # t=1 block, 16 channels
    assert mobile["features.2.conv.4.conv.weight"].shape == (1, 1, 1)  # 24 channels
    assert mobile["features.11.conv.4.conv.weight"].shape == (1, 1, 3)  # first 96-channel block
    assert mobile["classifier.1.weight"].shape == (1000, 1280)
    se = models.create_model("se_resnet18").state_dict()
    assert se["layer1.0.se.fc.0.weight"].shape == (4, 64) and "layer1.0.se.fc.0.bias" not in se
    cbam = models.create_model("cbam_resnet18").state_dict()
    assert cbam["layer1.0.cbam.ChannelGate.mlp.1.bias"].shape == (4,)
    assert cbam["layer1.0.cbam.SpatialGate.spatial.conv.weight"].shape == (1, 2, 7, 7)


def test_plain_resnet_uses_torchvision_keys_and_count():
    model = models.create_model("resnet50")
    assert sum(p.numel() for p in model.parameters()) == 25557032  # torchvision's resnet50
    assert "layer3.5.bn3.running_var" in model.state_dict()


class OfficialECALayer(nn.Module):
    """The layer exactly as the official ECA-Net code writes it (squeeze/transpose chain)."""

    def __init__(self, k_size=3):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * self.sigmoid(y).expand_as(x)


@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_lean_eca_equals_official_layer(k):
    torch.manual_seed(k)
    official, ours = OfficialECALayer(k), ECALayer(48, k)
    ours.load_state_dict(official.state_dict())
    x = torch.randn(3, 48, 9, 11)
    assert torch.equal(official(x), ours(x))
