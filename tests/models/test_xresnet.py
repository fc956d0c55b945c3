"""fastai's XResNet: counts equal to the reference figures, ResNet-D shortcut, zero-init, small stem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from sotakit.models import build_meta_model, build_model, count_parameters
from sotakit.models.xresnet import ResBlock

# Computed from the architecture in the reference (section 4); identical to timm's resnet*d.
REFERENCE = {
    "xresnet18": 11_708_744,
    "xresnet34": 21_816_904,
    "xresnet50": 25_576_264,
    "xresnet101": 44_568_392,
    "xresnet152": 60_212_040,
}


def test_counts_at_1000_classes_equal_the_reference_and_the_golden_file():
    golden = json.loads((Path(__file__).parents[1] / "golden" / "model_params.json").read_text())
    counts = {n: count_parameters(build_meta_model(n, num_classes=1000)) for n in REFERENCE}
    assert counts == REFERENCE
    assert {n: golden[n] for n in REFERENCE} == REFERENCE


def test_stem_is_32_32_64_and_shortcut_downsamples_by_average_pooling():
    with torch.device("meta"):
        model = build_model("xresnet50", num_classes=10)
    assert [model[i][0].out_channels for i in range(3)] == [32, 32, 64]
    assert [model[i][0].stride for i in range(3)] == [(2, 2), (1, 1), (1, 1)]
    first_of_stage2 = model[5][0]
    pool, conv = first_of_stage2.idpath[0], first_of_stage2.idpath[1][0]
    assert isinstance(pool, nn.AvgPool2d) and pool.kernel_size == 2 and pool.ceil_mode
    assert conv.kernel_size == (1, 1) and conv.stride == (1, 1)
    assert first_of_stage2.convpath[1][0].stride == (2, 2)  # the stride sits in the 3x3 conv


def test_each_branch_ends_in_a_zero_bn_so_a_block_starts_as_identity_plus_relu():
    torch.manual_seed(0)
    block = ResBlock(1, 16, 16).eval()
    last_bn = block.convpath[-1][1]
    assert torch.equal(last_bn.weight, torch.zeros(16))
    assert torch.allclose(last_bn.bias, torch.full((16,), 1e-3))
    x = torch.randn(2, 16, 8, 8)
    assert torch.allclose(block(x), torch.relu(x + 1e-3))


@pytest.mark.parametrize("name", ["xresnet18", "xresnet50"])
def test_small_input_stem_keeps_resolution(name):
    seen = {}
    for small in (False, True):
        with torch.device("meta"):
            model = build_model(name, num_classes=10, small_input=small)
        model[7].register_forward_hook(lambda m, i, out, small=small: seen.update({small: out.shape[-2:]}))
        assert model(torch.empty(2, 3, 32, 32, device="meta")).shape == (2, 10)
    assert tuple(seen[True]) == (4, 4) and tuple(seen[False]) == (1, 1)
