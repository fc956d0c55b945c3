"""fastai's XResNet (the "bag of tricks" ResNet-D), used by fastbook chapter 7 on Imagenette.

Follows fastai v2 ``vision/models/xresnet.py`` (nbs/11): a deep 3x3 stem of widths 32-32-64, the
stride in the bottleneck's 3x3 conv, a shortcut that downsamples by average pooling before a 1x1
conv (no strided 1x1 that drops 3/4 of the input), the last BatchNorm of every residual branch
initialised to zero (each block starts as the identity) and BN biases at 1e-3. Hand-written because
torchvision has no ResNet-D; the parameter counts equal timm's ``resnet*d`` exactly.
``small_input=True`` (via ``build_model``) makes the stem stride 1 and drops the max-pool.
"""

from __future__ import annotations

from torch import nn

from .registry import register_model


def _conv_layer(cin: int, cout: int, ks: int = 3, stride: int = 1, zero_bn: bool = False, act: bool = True):
    bn = nn.BatchNorm2d(cout)
    nn.init.constant_(bn.bias, 1e-3)  # fastai's _get_norm
    nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
    layers = [nn.Conv2d(cin, cout, ks, stride=stride, padding=ks // 2, bias=False), bn]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if act else nn.Sequential(*layers)


class ResBlock(nn.Module):
    """Basic (expansion 1) or bottleneck (expansion 4) block with the avg-pool shortcut."""

    def __init__(self, expansion: int, ni: int, nf: int, stride: int = 1):
        super().__init__()
        nf, ni = nf * expansion, ni * expansion
        if expansion == 1:
            self.convpath = nn.Sequential(_conv_layer(ni, nf, stride=stride),
                                          _conv_layer(nf, nf, zero_bn=True, act=False))
        else:
            mid = nf // expansion
            self.convpath = nn.Sequential(_conv_layer(ni, mid, ks=1), _conv_layer(mid, mid, stride=stride),
                                          _conv_layer(mid, nf, ks=1, zero_bn=True, act=False))
        idpath = []
        if stride != 1:
            idpath.append(nn.AvgPool2d(stride, ceil_mode=True))
        if ni != nf:
            idpath.append(_conv_layer(ni, nf, ks=1, act=False))
        self.idpath = nn.Sequential(*idpath)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.convpath(x) + self.idpath(x))


class XResNet(nn.Sequential):
    """Stem (3 ConvLayers + max-pool), four stages, then pool-flatten-dropout-linear."""

    def __init__(self, expansion: int, layers: list[int], *, num_classes: int = 1000, in_channels: int = 3,
                 p: float = 0.0, stem_szs: tuple[int, ...] = (32, 32, 64)):
        szs = (in_channels, *stem_szs)
        stem = [_conv_layer(szs[i], szs[i + 1], stride=2 if i == 0 else 1) for i in range(len(stem_szs))]
        block_szs = [64 // expansion, 64, 128, 256, 512]
        stages = []
        for i, n in enumerate(layers):
            ni, nf, stride = block_szs[i], block_szs[i + 1], 1 if i == 0 else 2
            blocks = [ResBlock(expansion, nf if j else ni, nf, 1 if j else stride) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
        super().__init__(
            *stem, nn.MaxPool2d(3, stride=2, padding=1), *stages,
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(p),
            nn.Linear(block_szs[-1] * expansion, num_classes),
        )
        for m in self.modules():  # fastai's init_cnn: kaiming normal weights, zero biases
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def use_small_input_stem(self) -> None:
        """Stride-1 first conv and no max-pool, so a 32 px image reaches the last stage at 4 px."""
        self[0][0].stride = (1, 1)
        self[3] = nn.Identity()


def _register(name: str, expansion: int, layers: list[int]) -> None:
    def build(*, num_classes: int = 1000, **kw) -> nn.Module:
        return XResNet(expansion, layers, num_classes=num_classes, **kw)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"fastai's ``{name}`` (expansion {expansion}, layers {layers})."
    register_model(name)(build)


for _name, _exp, _layers in [("xresnet18", 1, [2, 2, 2, 2]), ("xresnet34", 1, [3, 4, 6, 3]),
                             ("xresnet50", 4, [3, 4, 6, 3]), ("xresnet101", 4, [3, 4, 23, 3]),
                             ("xresnet152", 4, [3, 8, 36, 3])]:
    _register(_name, _exp, _layers)
del _name, _exp, _layers
