"""ResNets with an optional attention module per block (ECA, SE or CBAM).

Parameter names follow torchvision for the backbone and the official ECA-Net, SENet and CBAM code for the
attention modules, which sit after the block's last BatchNorm and before the residual add.
"""
from typing import Callable, List, Optional, Sequence, Type, Union

import torch
from torch import nn

# (channels, stage index 0..3) -> attention module
AttentionFactory = Callable[[int, int], nn.Module]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class _AttentionMixin:
    def _attach_attention(self, attention_name: Optional[str], module: Optional[nn.Module]) -> None:
        self.attention_name = attention_name
        if attention_name:
            setattr(self, attention_name, module)

    def _apply_attention(self, out: torch.Tensor) -> torch.Tensor:
        if self.attention_name:
            return getattr(self, self.attention_name)(out)
        return out


class BasicBlock(_AttentionMixin, nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, attention_name=None, attention=None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self._attach_attention(attention_name, attention)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self._apply_attention(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class Bottleneck(_AttentionMixin, nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, attention_name=None, attention=None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self._attach_attention(attention_name, attention)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self._apply_attention(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(
        self,
        block: Type[Union[BasicBlock, Bottleneck]],
        layers: Sequence[int],
        num_classes: int = 1000,
        attention_name: Optional[str] = None,
        attention_factory: Optional[AttentionFactory] = None,
        stem_width: int = 64,
    ):
        super().__init__()
        self.inplanes = stem_width
        self.conv1 = nn.Conv2d(3, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        widths = [stem_width * 2 ** i for i in range(4)]
        stages = [
            self._make_stage(block, width, blocks, 1 if i == 0 else 2, i, attention_name, attention_factory)
            for i, (width, blocks) in enumerate(zip(widths, layers))
        ]
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[-1] * block.expansion, num_classes)
        self._init_weights()

    def _make_stage(self, block, planes, blocks, stride, stage, attention_name, attention_factory) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        modules: List[nn.Module] = []
        for index in range(blocks):
            attention = attention_factory(planes * block.expansion, stage) if attention_factory else None
            modules.append(block(self.inplanes, planes, stride if index == 0 else 1,
                                 downsample if index == 0 else None, attention_name, attention))
            self.inplanes = planes * block.expansion
        return nn.Sequential(*modules)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x))
        return self.fc(torch.flatten(x, 1))
