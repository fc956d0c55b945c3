"""Registry behaviour and a forward/backward sweep over the registered architectures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision

from sotakit.models import (
    UnknownModelError,
    build_meta_model,
    build_model,
    get_model_builder,
    list_models,
    register_model,
    registry,
)

GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "model_params.json").read_text())

# Longest prefix first; a model matching none (a new torchvision model) is its own family, as is
# every non-torchvision model (sotakit's own are small and each gets a real forward/backward).
TORCHVISION = set(torchvision.models.list_models(module=torchvision.models))
FAMILIES = (
    "efficientnet_v2", "efficientnet", "mobilenet_v2", "mobilenet_v3", "regnet_x", "regnet_y", "resnext",
    "wide_resnet", "resnet", "shufflenet_v2", "swin_v2", "swin", "convnext", "densenet", "mnasnet",
    "squeezenet", "vgg", "vit", "maxvit", "alexnet", "googlenet", "inception",
)  # fmt: skip
# Smallest square input each model or family accepts (default 32) and the kwargs it needs for it.
# maxvit: every stage must split into 7x7 windows; vit: a multiple of the patch size.
MIN_SIZE = {"alexnet": 64, "inception": 75, "maxvit": 224, "vit_h_14": 28}
SIZE_KWARGS = {"vit": lambda s: {"image_size": s}}
MAX_CPU_PARAMS = 30_000_000


def family(name: str) -> str:
    if name not in TORCHVISION:
        return name
    return next((f for f in FAMILIES if name.startswith(f)), name)


def _representatives() -> dict[str, str]:
    # The smallest model of each family stands in for the family in the real forward/backward.
    reps: dict[str, str] = {}
    for name in list_models():
        fam, size = family(name), GOLDEN.get(name, 0)
        if fam not in reps or size < GOLDEN.get(reps[fam], 0):
            reps[fam] = name
    return reps


REPS = _representatives()


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))


def test_register_model_defaults_to_function_name_and_rejects_duplicates(scratch_registry):
    @register_model()
    def tiny_test_net(*, num_classes: int) -> nn.Module:
        return nn.Linear(4, num_classes)

    assert build_model("tiny_test_net", num_classes=3).out_features == 3
    with pytest.raises(ValueError, match="tiny_test_net"):
        register_model("tiny_test_net")(tiny_test_net)
    with pytest.raises(ValueError, match="resnet18"):
        register_model("resnet18")(tiny_test_net)


def test_only_classification_models_are_registered():
    names = list_models()
    assert {"resnet50", "vit_b_16", "regnet_y_400mf", "inception_v3"} <= set(names)
    assert not [n for n in names if n.startswith(("fasterrcnn", "fcn", "deeplab", "r3d", "raft",
                                                  "quantized"))]
    assert names == sorted(names)


def test_list_models_patterns():
    resnets = list_models("resnet*")
    assert "resnet18" in resnets and "wide_resnet50_2" not in resnets and "resnext50_32x4d" not in resnets
    assert list_models(["resnet1*", "vgg11"], exclude="resnet10*") == ["resnet152", "resnet18", "vgg11"]
    assert "vgg11_bn" not in list_models(exclude="*_bn")
    assert list_models("no_such_*") == []


def test_unknown_name_names_the_closest():
    with pytest.raises(UnknownModelError, match="'resnet50'") as info:
        get_model_builder("resnet_50")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith("Unknown model 'resnet_50'; did you mean 'resnet50'")
    with pytest.raises(KeyError, match="list_models"):
        build_model("zzzzzz", num_classes=10)


def test_pretrained_weights_are_refused():
    with pytest.raises(ValueError, match="pretrained"):
        build_model("resnet18", num_classes=10, weights="DEFAULT")


def _layer4_size(model: nn.Module, image_size: int) -> tuple[int, int]:
    seen = {}
    model.layer4.register_forward_hook(lambda m, i, out: seen.update(shape=out.shape))  # returns None
    model(torch.empty(2, 3, image_size, image_size, device="meta"))  # BN needs 2 in train mode
    return tuple(seen["shape"][-2:])


def test_small_input_stem_keeps_resolution():
    with torch.device("meta"):
        small = build_model("resnet18", num_classes=10, small_input=True)
        default = build_model("resnet18", num_classes=10)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1) and small.conv1.bias is None
    assert small.conv1.out_channels == default.conv1.out_channels == 64
    assert isinstance(small.maxpool, nn.Identity)
    assert _layer4_size(small, 28) == (4, 4)
    assert _layer4_size(default, 28) == (1, 1)


def test_small_input_resnet_trains(one_thread):
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10, small_input=True)
    model(torch.randn(2, 3, 32, 32)).logsumexp(1).mean().backward()
    assert torch.isfinite(model.conv1.weight.grad).all() and model.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["resnext50_32x4d", "wide_resnet50_2"])
def test_small_input_applies_to_resnet_family(name):
    with torch.device("meta"):
        model = build_model(name, num_classes=10, small_input=True)
    assert model.conv1.kernel_size == (3, 3) and isinstance(model.maxpool, nn.Identity)


def test_small_input_is_a_no_op_without_resnet_stem():
    torch.manual_seed(0)
    a = build_model("mobilenet_v3_small", num_classes=10, small_input=True)
    torch.manual_seed(0)
    b = build_model("mobilenet_v3_small", num_classes=10)
    assert str(a) == str(b)


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_aux_heads_off_so_train_forward_returns_a_tensor(name):
    with torch.device("meta"):
        model = build_model(name, num_classes=10).train()
        out = model(torch.empty(2, 3, 75, 75))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)


def _input_and_kwargs(name: str) -> tuple[int, dict]:
    size = MIN_SIZE.get(name, MIN_SIZE.get(family(name), 32))
    return size, SIZE_KWARGS.get(family(name), lambda s: {})(size)


@pytest.mark.slow  # the registry sweep: 86 builds, ~20 s here in all although each is on meta
@pytest.mark.parametrize("name", list_models())
def test_every_model_gives_logits_at_its_smallest_size(name):
    """Shape check for every registered model, on the meta device so it costs no compute."""
    size, kw = _input_and_kwargs(name)
    model = build_meta_model(name, num_classes=10, **kw).train()
    assert model(torch.empty(2, 3, size, size, device="meta")).shape == (2, 10)


@pytest.mark.slow  # a real forward and backward pass of one model per family, up to 1.5 s each
@pytest.mark.parametrize("name", list_models())
def test_forward_backward_one_model_per_family(name, one_thread):
    fam = family(name)
    if REPS[fam] != name:
        pytest.skip(f"{name}: family {fam!r} covered by {REPS[fam]}")
    if GOLDEN.get(name, 0) > MAX_CPU_PARAMS:
        pytest.skip(f"{name}: {GOLDEN[name]:,} params: too big for a CPU test; shape checked on meta")
    size, kw = _input_and_kwargs(name)
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, **kw).train()
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 10)
    out.square().mean().backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert [n for n, p in params if p.grad is None] == []
    assert [n for n, p in params if not torch.isfinite(p.grad).all()] == []
