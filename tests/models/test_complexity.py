"""Parameter and FLOP counts: golden counts for every registered model, hand-checked FLOPs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from sotakit.models import (
    build_meta_model,
    build_model,
    count_flops,
    count_parameters,
    describe_models,
    list_models,
)

GOLDEN = Path(__file__).parents[1] / "golden" / "model_params.json"

# Published torchvision parameter counts, proving the golden file holds real numbers; googlenet's is
# without aux heads (as registered), regnet_y_128gf's comes through the meta fallback path.
PUBLISHED = {
    "resnet50": 25_557_032,
    "resnet18": 11_689_512,
    "regnet_y_400mf": 4_344_144,
    "regnet_y_128gf": 644_812_894,
    "vit_b_16": 86_567_656,
    "googlenet": 6_624_904,
}


def _meta_counts() -> dict[str, int]:
    return {n: count_parameters(build_meta_model(n, num_classes=1000)) for n in list_models()}


@pytest.mark.slow  # builds every registered model (on meta): 4-20 s here
def test_every_registered_model_has_golden_count():
    """Fails for any model missing from the golden file or whose parameter count changed.

    After adding a model on purpose, regenerate with ``SOTAKIT_UPDATE_GOLDEN=1 pytest <this test>``.
    """
    counts = _meta_counts()
    if os.environ.get("SOTAKIT_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(counts, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert sorted(set(counts) - set(golden)) == [], "registered models missing from the golden file"
    assert {n: c for n, c in counts.items() if golden[n] != c} == {}


def test_golden_counts_match_published_numbers():
    golden = json.loads(GOLDEN.read_text())
    assert {n: golden[n] for n in PUBLISHED} == PUBLISHED


@pytest.mark.parametrize("name", ["resnet18", "regnet_x_400mf"])  # regnet: the meta fallback path
def test_meta_build_counts_match_a_real_build(name):
    meta = build_meta_model(name, num_classes=10, small_input=True)
    assert {p.device.type for p in meta.parameters()} | {b.device.type for b in meta.buffers()} == {"meta"}
    real = build_model(name, num_classes=10, small_input=True)
    assert count_parameters(meta) == count_parameters(real)
    assert nn.Module.register_parameter.__name__ == "register_parameter"  # fallback patch undone


def test_count_parameters_skips_frozen_and_shared_twice():
    lin = nn.Linear(4, 3)  # 15 parameters
    frozen = nn.Linear(4, 3).requires_grad_(False)
    assert count_parameters(nn.Sequential(lin, lin, frozen)) == 15


def test_count_flops_of_hand_built_model_matches_formula():
    cin, cout, k, hw, classes = 3, 8, 3, 8, 10
    model = nn.Sequential(nn.Conv2d(cin, cout, k, padding=1), nn.Flatten(),
                          nn.Linear(cout * hw * hw, classes))
    expected = 2 * cin * cout * k * k * hw * hw + 2 * (cout * hw * hw) * classes
    assert count_flops(model, image_size=hw) == expected == 37_888


def test_count_flops_restores_training_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train()
    count_flops(model, image_size=4)
    assert model.training and model[1].training


def test_resnet50_macs_match_published():
    # torchvision documents 4.09 "GFLOPS" for resnet50, which are multiply-adds.
    macs = count_flops(build_meta_model("resnet50", num_classes=1000), image_size=224) / 2
    assert macs == pytest.approx(4.09e9, rel=0.02)


def test_count_flops_runs_on_meta_without_memory():
    model = build_meta_model("regnet_y_400mf", num_classes=1000)  # built via the fallback path
    assert next(model.parameters()).device.type == "meta"
    assert count_flops(model, image_size=224) / 2 == pytest.approx(0.4e9, rel=0.02)


def test_describe_models_reports_failures_per_row():
    rows = {r["name"]: r for r in describe_models("vit_b_16", image_size=32, num_classes=10,
                                                  small_input=True)}
    assert set(rows) == {"vit_b_16"}
    row = rows["vit_b_16"]
    assert row["params"] > 0 and row["flops"] is None and "224" in row["error"]

    rows = describe_models("resnet18", image_size=32, num_classes=10, small_input=True)
    assert rows[0]["error"] is None and rows[0]["macs"] == rows[0]["flops"] // 2
    # The CIFAR stem keeps 32x32 maps in the first stage, so it costs far more than the default.
    default = describe_models("resnet18", image_size=32, num_classes=10, small_input=False)[0]
    assert rows[0]["flops"] > 10 * default["flops"]


def test_describe_models_builds_nothing_real():
    before = torch.empty(0).device
    describe_models("resnet18", image_size=64, num_classes=10, small_input=False)
    assert torch.empty(0).device == before  # the meta device context did not leak
