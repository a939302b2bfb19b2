"""A classifier this repository does not define, written the way timm writes its ECA ResNets (``ecaresnet26t``,
``ecaresnet50d``): a deep stem, average-pool downsampling in the shortcut, the attention module named ``se`` of class
``EcaModule`` with a conv1d gate, ``global_pool`` and ``fc`` heads. timm itself is never imported (it cannot load
here); the tests save this model as a program (.pt2 and TorchScript) the way a timm user would, and the project must
take it with no knowledge of its code."""
import json
import os
from typing import Dict

import torch
from torch import nn
from torch.nn import functional as F

from data.digits import INPUT_SIZE

# What timm's ``model.pretrained_cfg`` holds, for a digits model: bicubic, crop_pct 0.875 -> floor(32 / 0.875) = 36.
PRETRAINED_CFG = {
    "input_size": [3, INPUT_SIZE, INPUT_SIZE], "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center",
    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "num_classes": 10,
    "test_input_size": [3, 40, 40], "test_crop_pct": 0.95, "first_conv": "conv1.0", "classifier": "fc",
}


class EcaModule(nn.Module):
    """timm.layers.EcaModule: global average pool -> conv1d across channels -> sigmoid -> multiply."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)
        y = self.conv(y)
        y = self.gate(y).view(x.shape[0], -1, 1, 1)
        return x * y.expand_as(x)


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = EcaModule(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes:  # timm's "d" variants: average-pool, then a 1x1 conv
            self.downsample = nn.Sequential(nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
                                            if stride > 1 else nn.Identity(),
                                            nn.Conv2d(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.se(self.bn2(self.conv2(x)))
        return self.act2(x + shortcut)


class TimmLikeEcaResNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.conv1 = nn.Sequential(  # the deep stem
            nn.Conv2d(3, width // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(inplace=True),
            nn.Conv2d(width // 2, width, 3, 1, 1, bias=False))
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.layer1 = Bottleneck(width, width)
        self.layer2 = Bottleneck(width, width * 2, stride=2)
        self.layer3 = Bottleneck(width * 2, width * 4, stride=2)
        self.fc = nn.Linear(width * 4, num_classes)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def train(train_dir: str, epochs: int = 5, seed: int = 0) -> nn.Module:
    """Trained briefly on the digits through the preprocessing of PRETRAINED_CFG (bicubic, resize 36, crop 32)."""
    import numpy as np

    from deploy.images import walk_images
    from deploy.preprocess import PreprocessSpec, preprocess_file

    torch.manual_seed(seed)
    model = TimmLikeEcaResNet()
    spec = PreprocessSpec(input_size=INPUT_SIZE, resize_size=36, interpolation="bicubic")
    paths = walk_images(train_dir)
    x = torch.from_numpy(np.stack([preprocess_file(p, spec) for p in paths]))
    y = torch.tensor([int(os.path.basename(os.path.dirname(p))) for p in paths])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * ((len(x) + 63) // 64)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


def save_programs(model: nn.Module, folder: str, name: str = "ecaresnet_digits") -> Dict[str, str]:
    """What a timm user does in their own environment: the program as .pt2 (dynamic batch) and TorchScript, and
    the pretrained_cfg as JSON."""
    os.makedirs(folder, exist_ok=True)
    example = torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE)
    paths = {"pt2": os.path.join(folder, name + ".pt2"), "torchscript": os.path.join(folder, name + ".torchscript.pt"),
             "config": os.path.join(folder, name + ".pretrained_cfg.json")}
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1,
                                                                                                max=1024)},))
        torch.export.save(program, paths["pt2"])
        torch.jit.save(torch.jit.trace(model, example), paths["torchscript"])
    with open(paths["config"], "w", encoding="utf-8") as handle:
        json.dump(PRETRAINED_CFG, handle)
    return paths
