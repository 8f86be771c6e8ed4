"""ResNet-18 and PreAct-ResNet-18, CIFAR variants.

CIFAR variant (as in the Mixup paper's code, Zhang et al. 2018, and kuangliu/pytorch-cifar): a 3x3
stride-1 stem and no max-pool, so a 32x32 image reaches the last stage at 4x4; four stages of two
blocks with 64/128/256/512 channels; global average pool and one linear layer.

- `resnet18`: post-activation BasicBlocks (He et al. 2016a); 11.17M parameters for 10 classes.
- `preact_resnet18`: pre-activation blocks (He et al. 2016b) built exactly as in the Mixup paper's
  CIFAR code (facebookresearch/mixup-cifar10, models/resnet.py `ResNet18`): stem conv-BN-ReLU, blocks
  BN-ReLU-conv-BN-ReLU-conv whose shortcut (identity, or a plain 1x1 conv when the shape changes) takes
  the block's pre-activated input, and no extra BN-ReLU before the pool.

Plain modules with PyTorch's default initialisation (as in both references); they run in
channels_last memory format and under bf16 autocast without changes. The average pool is adaptive so
other image sizes work too (identical to `avg_pool2d(4)` at 32x32).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        # As in the Mixup code, both shortcuts carry the pre-activated input (kuangliu's identity
        # shortcut carries the raw x instead).
        shortcut = self.shortcut(pre) if self.shortcut is not None else pre
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class CifarResNet(nn.Module):
    """Stem (3x3 conv, BN, ReLU) -> 4 stages -> global average pool -> linear."""

    def __init__(
        self,
        block: type[nn.Module],
        blocks_per_stage: tuple[int, ...],
        num_classes: int,
        in_channels: int = 3,
        widths: tuple[int, ...] = (64, 128, 256, 512),
    ):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        in_ch = widths[0]
        for i, (width, n_blocks) in enumerate(zip(widths, blocks_per_stage)):
            first_stride = 1 if i == 0 else 2
            layers = []
            for j in range(n_blocks):
                layers.append(block(in_ch, width, first_stride if j == 0 else 1))
                in_ch = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet18(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels)


def preact_resnet18(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(PreActBlock, (2, 2, 2, 2), num_classes, in_channels)
