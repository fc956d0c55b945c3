"""The paper's 24 RegNets: stages by pycls's rule, exact pycls parameter counts, MACs within 0.5%."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sotakit.models import build_meta_model, build_model, count_flops, count_parameters, list_models
from sotakit.models.regnet import DESIGNS, TORCHVISION_EQUIVALENT, generate_stages, regnet_note, regnet_stages

PYCLS = {k: v for k, v in json.loads((Path(__file__).parents[1] / "golden" / "regnet_pycls.json")
                                     .read_text()).items() if not k.startswith("_")}


def test_the_24_are_registered_under_the_keras_names():
    assert list_models("regnet[xy]_*") == sorted(PYCLS) and len(PYCLS) == 24


def test_the_rule_gives_pycls_stages():
    for name, want in PYCLS.items():
        assert list(generate_stages(DESIGNS[name])) == [want["widths"], want["depths"], want["group_widths"]]


@pytest.mark.slow  # builds and counts all 24 on meta, the 32GF ones included: ~12 s here
@pytest.mark.parametrize("name", sorted(PYCLS))
def test_built_models_match_pycls_params_and_macs(name):
    want = PYCLS[name]
    model = build_meta_model(name, num_classes=1000)
    st = regnet_stages(model)
    assert (st["widths"], st["depths"], st["group_widths"]) == (want["widths"], want["depths"],
                                                                want["group_widths"])
    assert count_parameters(model) == want["params"]
    # pycls rounds its GMACs to 3 decimals (0.199 for X-200MF), hence the 0.5% tolerance
    assert count_flops(model, 224) / 2e9 == pytest.approx(want["gmacs_224"], rel=0.005)


def test_torchvision_names_keep_torchvision_definitions():
    """Same (d, w0, wa, wm, g), but torchvision's _make_divisible widens three of them."""
    differ = {tv for tv, (_, same) in TORCHVISION_EQUIVALENT.items() if not same}
    assert differ == {"regnet_x_400mf", "regnet_y_800mf", "regnet_y_8gf"}
    for tv, (paper, same) in TORCHVISION_EQUIVALENT.items():
        ours = count_parameters(build_meta_model(paper, num_classes=1000))
        theirs = count_parameters(build_meta_model(tv, num_classes=1000))
        assert (ours == theirs) == same, tv
    assert regnet_stages(build_meta_model("regnet_x_400mf", num_classes=10))["widths"] == [32, 64, 160, 400]
    assert regnet_note("regnet_y_8gf") == "torchvision's, wider than regnety_080"
    assert regnet_note("regnet_x_800mf") == "torchvision's, = regnetx_008"
    assert regnet_note("regnety_004") == "the paper's (pycls rule)"


@pytest.mark.parametrize("name", ["regnetx_002", "regnet_y_400mf"])
def test_small_images_get_a_stride_1_stem(name):
    def last_stage(model):
        seen = {}
        model.trunk_output.register_forward_hook(lambda m, i, out: seen.update(shape=out.shape))
        model(torch.empty(2, 3, 32, 32, device="meta"))
        return tuple(seen["shape"][-2:])

    small = build_meta_model(name, num_classes=10, small_input=True)
    default = build_meta_model(name, num_classes=10)
    assert small.stem[0].stride == (1, 1) and default.stem[0].stride == (2, 2)
    assert count_parameters(small) == count_parameters(default)
    assert (last_stage(small), last_stage(default)) == ((2, 2), (1, 1))


def test_regnet_trains_on_small_images(one_thread):
    torch.manual_seed(0)
    model = build_model("regnety_002", num_classes=10, small_input=True)
    model(torch.randn(2, 3, 28, 28)).logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_models_command_shows_stages_and_the_published_table(capsys):
    """`sotakit models 'regnetx_00[24]' --published`: stages, the seed's paper/Keras top-1 and notes."""
    from sotakit.cli import main

    assert main(["models", "regnetx_00[24]", "--published"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[1:-1]]
            for line in out.splitlines() if line.startswith("│ regnetx")}
    assert rows["regnetx_002"][3:] == ["13", "24,56,152,368", "1,1,4,7", "8,8,8,8", "68.9", "67.15", "1.75",
                                       "adamw, area_factor=0.25", "the paper's (pycls rule)"]
    assert rows["regnetx_004"][1:3] == ["4.78", "0.795"]  # 10 classes; FLOPs = 2 x pycls's 0.398 GMACs


@pytest.mark.slow  # ~20 s for the 24
@pytest.mark.parametrize("name", sorted(PYCLS))
def test_forward_and_backward_at_32px_on_meta(name):
    """All 24, also those too big for a real CPU pass in the registry sweep: autograd runs on meta."""
    model = build_meta_model(name, num_classes=10, small_input=True).train()
    out = model(torch.empty(2, 3, 32, 32, device="meta"))
    assert out.shape == (2, 10)
    out.square().mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or p.grad.shape != p.shape] == []
