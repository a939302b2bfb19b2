"""models.complexity against the paper's Table A (binary units, '%.3f') and against hand-counted models."""
import pytest
import torch
from torch import nn

import models
from models.complexity import Complexity, complexity, count_macs, count_params, macs_by_module

# Table A: (#Param = params / 2**20, GFLOPs = MACs / 2**30 at 1x3x224x224), as printed.
TABLE_A = {
    "resnet18": ("11.148", "1.699"),
    "se_resnet18": ("11.231", "1.700"),
    "cbam_resnet18": ("11.234", "1.700"),
    "eca_resnet18": ("11.148", "1.700"),
    "resnet34": ("20.788", "3.427"),
    "se_resnet34": ("20.938", "3.428"),
    "cbam_resnet34": ("20.943", "3.428"),
    "eca_resnet34": ("20.788", "3.428"),
}

@pytest.fixture(scope="module")
def table_models():
    return {name: models.create_model(name) for name in TABLE_A}


@pytest.fixture(scope="module")
def table_complexity(table_models):
    return {name: complexity(model) for name, model in table_models.items()}


@pytest.mark.parametrize("name", list(TABLE_A))
def test_params_match_baselines(name, table_complexity):
    assert "%.3f" % table_complexity[name].mparams_binary == TABLE_A[name][0]


@pytest.mark.parametrize("name", list(TABLE_A))
def test_gflops_match_baselines(name, table_complexity):
    assert "%.3f" % table_complexity[name].gmacs_binary == TABLE_A[name][1]


def test_cbam_channel_gate_pools_functionally_as_the_official_code(table_models):
    # The official CBAM pools with F.avg_pool2d / F.max_pool2d, which module-hook counters do not see.
    per_module = macs_by_module(table_models["cbam_resnet18"])
    assert not any("ChannelGate" in name and "pool" in name for name in per_module)


def test_complexity_by_name_is_the_same_as_by_model(table_complexity):
    by_name = complexity("eca_resnet18")
    assert by_name == Complexity("eca_resnet18", table_complexity["eca_resnet18"].params,
                                 table_complexity["eca_resnet18"].macs)


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)  # with bias
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.relu(self.bn(self.conv(x))), 1))


def test_tiny_model_by_hand():
    model = _Tiny().train()
    # conv: 4x8x8 = 256 outputs, each 3*3*3 = 27 MACs + 1 bias add       -> 256 * 28      = 7168
    # bn:   4 ops on each of its 256 input elements                       -> 4 * 256       = 1024
    # relu: 0
    # fc:   10 outputs, each 256 multiplies + 255 adds + 1 bias add       -> 10 * 512      = 5120
    assert count_macs(model, input_size=8) == 7168 + 1024 + 5120
    assert macs_by_module(model, input_size=8) == {"conv": 7168, "bn": 1024, "fc": 5120}
    # conv 3*4*9 + 4, bn 4 + 4 (running stats are buffers), fc 256*10 + 10
    assert count_params(model) == 112 + 8 + 2570
    assert model.training  # the mode is restored after counting


def test_global_pool_and_bias_free_linear_by_hand():
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5, bias=False), nn.Sigmoid())
    # pool: 3 outputs, each 6*6 = 36 adds + 1 divide -> 111; linear: 5 * (3 + 2) = 25; flatten, sigmoid: 0
    assert count_macs(model, input_size=6) == 111 + 25


def test_a_module_called_twice_counts_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1, bias=False)

        def forward(self, x):
            return self.conv(self.conv(x))

    assert count_macs(Twice(), input_size=4) == 2 * (3 * 16 * 3)


def test_a_parameterised_module_without_a_rule_is_an_error():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(2, 8))
    with pytest.raises(ValueError, match="GroupNorm"):
        count_macs(model, input_size=4)


@pytest.mark.parametrize("name", models.list_models())
def test_every_registered_model_counts(name):
    model = models.create_model(name)
    result = complexity(model, input_size=64)
    assert result.name == name
    assert result.params == sum(p.numel() for p in model.parameters())
    assert result.macs > 0
