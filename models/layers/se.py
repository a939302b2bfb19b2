"""Squeeze-and-Excitation (Hu et al.), as the ECA-Net paper compares it: reduction 16 and no biases in the two FC layers.

Keys follow the widely used PyTorch SE layer: ``se.fc.0.weight`` and ``se.fc.2.weight``.
"""
import torch
from torch import nn


class SELayer(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.channels = channels
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False),
            nn.Sigmoid(),
        )

    @property
    def sigmoid(self) -> nn.Module:
        return self.fc[3]

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        y = self.avg_pool(x).reshape(-1, self.channels)
        return self.fc(y).reshape(-1, self.channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)
