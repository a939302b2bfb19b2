"""Efficient Channel Attention (Wang et al., CVPR 2020).

The parameter names match the official code (``eca.conv.weight`` of shape (1, 1, k)), so official
checkpoints load without renaming. The forward pass is written for a lean ONNX graph: the official layer's
squeeze/transpose/unsqueeze chain becomes one Reshape into the (N, 1, C) layout that Conv1d needs and one
back. Both are views of the same contiguous memory, so any weights trained with the official layer give the
same numbers.
"""
import math

import torch
from torch import nn


def adaptive_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """k = |log2(C)/gamma + b/gamma|_odd, the paper's rule (Eq. 12)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECALayer(nn.Module):
    """Global average pool, a 1-D conv of size k across channels, sigmoid, channel-wise scale.

    ``num_convs`` > 1 stacks further 1-D convs (seed Section B); the first keeps the official name ``conv``.
    """

    def __init__(self, channels: int, k_size: int = 3, num_convs: int = 1):
        super().__init__()
        if k_size < 1 or k_size % 2 == 0:
            raise ValueError("ECA kernel size must be a positive odd number, got {}".format(k_size))
        if num_convs < 1:
            raise ValueError("ECA needs at least one 1-D conv, got {}".format(num_convs))
        self.channels = channels
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = _channel_conv(k_size)
        self.extra_convs = nn.ModuleList(_channel_conv(k_size) for _ in range(num_convs - 1))
        self.sigmoid = nn.Sigmoid()

    @property
    def k_size(self) -> int:
        return self.conv.kernel_size[0]

    def set_kernel_size(self, k_size: int) -> None:
        """Rebuild the convs for another k, as a checkpoint demands."""
        self.conv = _channel_conv(k_size)
        self.extra_convs = nn.ModuleList(_channel_conv(k_size) for _ in self.extra_convs)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel weights, shape (N, C, 1, 1)."""
        y = self.avg_pool(x).reshape(-1, 1, self.channels)
        y = self.conv(y)
        for conv in self.extra_convs:
            y = conv(y)
        return self.sigmoid(y).reshape(-1, self.channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


def _channel_conv(k_size: int) -> nn.Conv1d:
    return nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
