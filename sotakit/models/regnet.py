"""The 24 RegNetX/RegNetY models of "Designing Network Design Spaces" (Radosavovic et al., 2020).

Named as Keras and timm name them (``regnetx_002`` ... ``regnety_320``) and generated from the
design-space parameters (depth d, w_0, w_a, w_m, group width g) by pycls's rule
(``pycls/models/regnet.py generate_regnet`` + ``blocks.py adjust_block_compatibility``), then built
on torchvision's ``RegNet`` modules (stem, blocks, SE, head and init are pycls's). torchvision's own
``regnet_x_*``/``regnet_y_*`` keep torchvision's definitions: its compatibility rounding
(``_make_divisible``) widens three of them (regnet_x_400mf, regnet_y_800mf, regnet_y_8gf) beyond the
paper's models; ``regnet_note`` says which name is which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn as nn
from torchvision.models.regnet import BlockParams, RegNet

from .registry import register_model


@dataclass(frozen=True)
class DesignParams:
    """One point of the RegNet design space (pycls ``configs/dds_baselines``)."""

    depth: int
    w_0: int
    w_a: float
    w_m: float
    group_width: int
    se: bool


# (d, w_0, w_a, w_m, g) of the 24 DDS baselines; Y adds SE with ratio 0.25 (of the block input width).
_X = {"002": (13, 24, 36.44, 2.49, 8), "004": (22, 24, 24.48, 2.54, 16), "006": (16, 48, 36.97, 2.24, 24),
      "008": (16, 56, 35.73, 2.28, 16), "016": (18, 80, 34.01, 2.25, 24), "032": (25, 88, 26.31, 2.25, 48),
      "040": (23, 96, 38.65, 2.43, 40), "064": (17, 184, 60.83, 2.07, 56), "080": (23, 80, 49.56, 2.88, 120),
      "120": (19, 168, 73.36, 2.37, 112), "160": (22, 216, 55.59, 2.1, 128),
      "320": (23, 320, 69.86, 2.0, 168)}
_Y = {"002": (13, 24, 36.44, 2.49, 8), "004": (16, 48, 27.89, 2.09, 8), "006": (15, 48, 32.54, 2.32, 16),
      "008": (14, 56, 38.84, 2.4, 16), "016": (27, 48, 20.71, 2.65, 24), "032": (21, 80, 42.63, 2.66, 24),
      "040": (22, 96, 31.41, 2.24, 64), "064": (25, 112, 33.22, 2.27, 72), "080": (17, 192, 76.82, 2.19, 56),
      "120": (19, 168, 73.36, 2.37, 112), "160": (18, 200, 106.23, 2.48, 112),
      "320": (20, 232, 115.89, 2.53, 232)}
DESIGNS = {**{f"regnetx_{k}": DesignParams(*v, se=False) for k, v in _X.items()},
           **{f"regnety_{k}": DesignParams(*v, se=True) for k, v in _Y.items()}}

# torchvision's names for the same design points; the three marked False differ from pycls's widths.
TORCHVISION_EQUIVALENT = {
    "regnet_x_400mf": ("regnetx_004", False), "regnet_x_800mf": ("regnetx_008", True),
    "regnet_x_1_6gf": ("regnetx_016", True), "regnet_x_3_2gf": ("regnetx_032", True),
    "regnet_x_8gf": ("regnetx_080", True), "regnet_x_16gf": ("regnetx_160", True),
    "regnet_x_32gf": ("regnetx_320", True), "regnet_y_400mf": ("regnety_004", True),
    "regnet_y_800mf": ("regnety_008", False), "regnet_y_1_6gf": ("regnety_016", True),
    "regnet_y_3_2gf": ("regnety_032", True), "regnet_y_8gf": ("regnety_080", False),
    "regnet_y_16gf": ("regnety_160", True), "regnet_y_32gf": ("regnety_320", True),
}

# The seed's results ("Training RegNets for tf.keras.applications", A. Kane, 2022): ImageNet top-1 of
# the paper, of the Keras training, and the settings it changed from the paper's.
PUBLISHED = {
    "regnetx_002": (68.9, 67.15, "adamw, area_factor=0.25"),
    "regnetx_004": (72.6, 71.22, "adamw, area_factor=0.08"),
    "regnetx_006": (74.1, 72.37, "adamw, area_factor=0.08"),
    "regnetx_008": (75.2, 73.45, "adamw, area_factor=0.08"),
    "regnetx_016": (77.0, 75.55, "adamw, area_factor=0.08, mixup=0.2"),
    "regnetx_032": (78.3, 77.09, "adamw, area_factor=0.08, mixup=0.2"),
    "regnetx_040": (78.6, 77.87, "adamw, area_factor=0.08, mixup=0.2"),
    "regnetx_064": (79.2, 78.22, "adamw, area_factor=0.08, mixup=0.3"),
    "regnetx_080": (79.3, 78.41, "adamw, area_factor=0.08, mixup=0.3"),
    "regnetx_120": (79.7, 79.09, "adamw, area_factor=0.08, mixup=0.4"),
    "regnetx_160": (80.0, 79.53, "adamw, area_factor=0.08, mixup=0.4"),
    "regnetx_320": (80.5, 80.35, "adamw, area_factor=0.08, mixup=0.4"),
    "regnety_002": (70.3, 68.51, "adamw, WD=1e-5, area_factor=0.16, mixup=0.2"),
    "regnety_004": (74.1, 72.11, "adamw, WD=1e-5, area_factor=0.16, mixup=0.2"),
    "regnety_006": (75.5, 73.52, "adamw, area_factor=0.16, mixup=0.2"),
    "regnety_008": (76.3, 74.48, "adamw, area_factor=0.16, mixup=0.2"),
    "regnety_016": (77.9, 76.95, "adamw, area_factor=0.08, mixup=0.2"),
    "regnety_032": (78.9, 78.05, "adamw, area_factor=0.08, mixup=0.2"),
    "regnety_040": (79.4, 78.2, "adamw, area_factor=0.08, mixup=0.2"),
    "regnety_064": (79.9, 78.95, "adamw, area_factor=0.08, mixup=0.3"),
    "regnety_080": (79.9, 79.11, "adamw, area_factor=0.08, mixup=0.3"),
    "regnety_120": (80.3, 79.45, "adamw, area_factor=0.08, mixup=0.4"),
    "regnety_160": (80.4, 79.71, "adamw, area_factor=0.08, mixup=0.4"),
    "regnety_320": (80.9, 80.12, "adamw, area_factor=0.08, mixup=0.4"),
}


def generate_stages(p: DesignParams, quantum: int = 8) -> tuple[list[int], list[int], list[int]]:
    """(stage widths, stage depths, group widths) by pycls's rule, in float64 as pycls computes it.

    Hand-written rather than torchvision's ``BlockParams.from_init_params``: that one rounds the
    width/group compatibility with ``_make_divisible`` (at least 0.9 x the width), which is not the
    paper's rule and gives other widths for three models.
    """
    # Python's round(), like numpy's, rounds halves to even.
    exps = [round(math.log((p.w_0 + p.w_a * j) / p.w_0) / math.log(p.w_m)) for j in range(p.depth)]
    block_widths = [int(round(p.w_0 * p.w_m ** s / quantum) * quantum) for s in exps]
    widths = sorted(set(block_widths))
    depths = [block_widths.count(w) for w in widths]
    # adjust_block_compatibility with bottleneck multiplier 1: group width clipped to the width, the
    # width rounded to the nearest multiple of the group width.
    groups = [min(p.group_width, w) for w in widths]
    widths = [max(g, int(round(w / g) * g)) for w, g in zip(widths, groups)]
    return widths, depths, groups


def build_regnet(p: DesignParams, *, num_classes: int = 1000, **kw) -> RegNet:
    """A torchvision RegNet with the stages ``generate_stages`` gives for ``p``."""
    widths, depths, groups = generate_stages(p)
    params = BlockParams(depths=depths, widths=widths, group_widths=groups,
                         bottleneck_multipliers=[1.0] * len(widths), strides=[2] * len(widths),
                         se_ratio=0.25 if p.se else None)
    return RegNet(params, num_classes=num_classes, **kw)


def regnet_stages(model: RegNet) -> dict:
    """Depth, stage widths, stage depths and group widths read from a built RegNet (meta or real)."""
    widths, depths, groups = [], [], []
    for stage in model.trunk_output:
        blocks = list(stage)
        conv = blocks[0].f.b[0]  # the 3x3 grouped conv of the first block
        widths.append(blocks[0].f.c[0].out_channels)
        depths.append(len(blocks))
        groups.append(conv.out_channels // conv.groups)
    return {"depth": sum(depths), "widths": widths, "depths": depths, "group_widths": groups}


def regnet_note(name: str) -> str | None:
    """Which definition a RegNet name has: the paper's (pycls), or torchvision's and whether it equals it."""
    if name in DESIGNS:
        return "the paper's (pycls rule)"
    if name in TORCHVISION_EQUIVALENT:
        paper, same = TORCHVISION_EQUIVALENT[name]
        return f"torchvision's, = {paper}" if same else f"torchvision's, wider than {paper}"
    if name.startswith("regnet_"):
        return "torchvision's (not in the paper's 24)"
    return None


def _register(name: str, p: DesignParams) -> None:
    def build(*, num_classes: int = 1000, **kw) -> nn.Module:
        return build_regnet(p, num_classes=num_classes, **kw)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{name}: d={p.depth}, w_0={p.w_0}, w_a={p.w_a}, w_m={p.w_m}, g={p.group_width}" + (
        ", SE 0.25" if p.se else "")
    register_model(name)(build)


for _name, _p in DESIGNS.items():
    _register(_name, _p)
del _name, _p
