"""CBAM (Woo et al., ECCV 2018) as in the authors' code and the paper's comparison.

Channel gate: a shared MLP with biases over the average- and max-pooled vectors. Spatial gate: channel-wise
max and mean, a 7x7 conv (2 -> 1, no bias) and BatchNorm. Keys match the official attention-module code
(``cbam.ChannelGate.mlp.1.weight``, ``cbam.SpatialGate.spatial.conv.weight``, ...).
"""
import torch
import torch.nn.functional as F
from torch import nn


class _ConvBN(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_planes, eps=1e-5, momentum=0.01, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.channels = channels
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels, channels // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels),
        )
        self.sigmoid = nn.Sigmoid()

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        # Functional pools, as in the official CBAM code. Module-hook counters (thop, models.complexity) do
        # not see them, which is how the paper's CBAM GFLOPs were counted.
        logits = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        return self.sigmoid(logits).reshape(-1, self.channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class SpatialGate(nn.Module):
    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.spatial = _ConvBN(2, 1, kernel_size)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compressed = torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), dim=1)
        return x * self.sigmoid(self.spatial(compressed))


class CBAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)  # noqa: N815 (official key names)
        self.SpatialGate = SpatialGate()  # noqa: N815

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))
