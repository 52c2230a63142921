"""Small image networks trained from scratch on small images (28-64 px), where an ImageNet body's stride-32
stem throws most of the picture away: `resnet9` (the DAWNBench CIFAR-10 shape)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from learnkit.core.registry import register_model

__all__ = ["resnet9", "ResNet9"]


def _conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                               nn.ReLU(inplace=True)]
    if pool:
        layers.insert(1, nn.MaxPool2d(2))  # pool before BN: 4x less work for BN and ReLU
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.convs = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.convs(x)


class ResNet9(nn.Module):
    """prep conv → [conv+pool, residual] → conv+pool → [conv+pool, residual] → max pool → linear.

    Layer groups (`layer_groups()`): stem + first stage, the rest of the body, the head.
    """

    def __init__(self, n_in: int = 3, n_out: int = 10, widths: Sequence[int] = (64, 128, 256, 512),
                 scale_out: float = 0.125):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = _conv_bn(n_in, w0)
        self.layer1 = nn.Sequential(_conv_bn(w0, w1, pool=True), _Residual(w1))
        self.layer2 = _conv_bn(w1, w2, pool=True)
        self.layer3 = nn.Sequential(_conv_bn(w2, w3, pool=True), _Residual(w3))
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(w3, n_out, bias=False))
        # A small output scale keeps the initial logits small (the DAWNBench trick): faster early training.
        self.scale_out = scale_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.head(x) * self.scale_out

    def layer_groups(self) -> list[nn.Module]:
        return [nn.ModuleList([self.stem, self.layer1]), nn.ModuleList([self.layer2, self.layer3]), self.head]


@register_model("resnet9")
def resnet9(n_in: int = 3, n_out: int = 10, widths: Sequence[int] = (64, 128, 256, 512),
            scale_out: float = 0.125) -> ResNet9:
    """A ResNet-9 for small images (e.g. `create_model("resnet9", n_in=1, n_out=10)` for Fashion-MNIST)."""
    return ResNet9(n_in, n_out, tuple(widths), scale_out)
