"""Compact networks for small images that torchvision lacks, for fast CPU training.

``resnet9`` is the ResNet-9 of Myrtle.ai's DAWNBench CIFAR-10 entry (D. Page, "How to train your
ResNet", 2018), also the base of airbench: a conv stem, three stages that double the width and halve
the resolution with max-pooling, a residual pair in stages one and three, a global max-pool and a
linear head scaled by 0.125. ``width`` sets the stem width (64 in the original); the ``_w16`` and
``_w32`` variants fit a 2-core CPU.
"""

from __future__ import annotations

from torch import nn

from .registry import register_model


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x):
        return x + self.body(x)


class _Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def _resnet9(num_classes: int, width: int, in_channels: int = 3) -> nn.Sequential:
    w = width
    return nn.Sequential(
        _conv_bn(in_channels, w),
        _conv_bn(w, 2 * w), nn.MaxPool2d(2), _Residual(2 * w),
        _conv_bn(2 * w, 4 * w), nn.MaxPool2d(2),
        _conv_bn(4 * w, 8 * w), nn.MaxPool2d(2), _Residual(8 * w),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(8 * w, num_classes, bias=False),
        _Scale(0.125),  # Page's logit scaling: keeps early softmax outputs soft
    )


@register_model()
def resnet9(*, num_classes: int = 1000, **kw) -> nn.Module:
    return _resnet9(num_classes, 64, **kw)


@register_model()
def resnet9_w32(*, num_classes: int = 1000, **kw) -> nn.Module:
    return _resnet9(num_classes, 32, **kw)


@register_model()
def resnet9_w16(*, num_classes: int = 1000, **kw) -> nn.Module:
    return _resnet9(num_classes, 16, **kw)
