"""Optimizers, parameter groups and schedules compute what the reference computes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sotakit.train import build_optimizer, build_scheduler, param_groups


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 2)
        self.class_token = nn.Parameter(torch.zeros(1, 4))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def groups_by_name(groups, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: (g["weight_decay"], sorted(names[id(p)] for p in g["params"])) for g in groups}


def test_default_one_group_with_weight_decay_and_no_frozen_params():
    m = Tiny()
    g = groups_by_name(param_groups(m, weight_decay=1e-4), m)
    assert list(g) == ["other"]
    assert g["other"][0] == 1e-4
    assert "frozen.weight" not in g["other"][1] and len(g["other"][1]) == 9


def test_norm_bias_and_embedding_decay_groups():
    m = Tiny()
    g = groups_by_name(param_groups(m, weight_decay=1e-4, norm_weight_decay=0.0, bias_weight_decay=0.5,
                                    transformer_embedding_decay=0.25), m)
    assert g["norm"] == (0.0, ["bn.weight", "ln.weight"])  # norm biases go to the bias group: custom key wins
    assert g["bias"] == (0.5, ["bn.bias", "conv.bias", "fc.bias", "ln.bias"])
    assert g["class_token"] == (0.25, ["class_token"])
    assert g["other"] == (1e-4, ["conv.weight", "fc.weight"])


def test_optimizers_as_the_reference_builds_them():
    p = [nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer(p, opt="sgd-nesterov", lr=0.1, momentum=0.9, weight_decay=1e-4)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    assert not build_optimizer(p, opt="sgd", lr=0.1).defaults["nesterov"]
    rms = build_optimizer(p, opt="rmsprop", lr=0.1)
    assert (rms.defaults["eps"], rms.defaults["alpha"]) == (0.0316, 0.9)
    adamw = build_optimizer(p, opt="adamw", lr=1e-3, weight_decay=0.05)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 0.05


def lrs(sched_kwargs, n, lr=0.5):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    s = build_scheduler(opt, **sched_kwargs)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    return out


def test_linear_warmup_then_cosine():
    got = lrs(dict(lr_scheduler="cosineannealinglr", total=10, warmup=5, warmup_method="linear",
                   warmup_decay=0.01, lr_min=0.0), 10)
    for e in range(5):  # LinearLR: factor from 0.01 to 1 over 5 epochs
        assert got[e] == pytest.approx(0.5 * (0.01 + (1 - 0.01) * e / 5))
    for e in range(5, 10):  # cosine over epochs - warmup
        assert got[e] == pytest.approx(0.5 * (1 + math.cos(math.pi * (e - 5) / 5)) / 2)


def test_constant_warmup_steplr_exponential_and_lr_min():
    got = lrs(dict(lr_scheduler="steplr", total=9, warmup=2, warmup_method="constant", warmup_decay=0.1,
                   step_size=3, gamma=0.1), 9, lr=1.0)
    assert got == pytest.approx([0.1, 0.1, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01])
    got = lrs(dict(lr_scheduler="exponentiallr", total=4, gamma=0.5), 4, lr=1.0)
    assert got == pytest.approx([1.0, 0.5, 0.25, 0.125])
    got = lrs(dict(lr_scheduler="cosineannealinglr", total=4, lr_min=0.1), 5, lr=1.0)
    assert got[0] == 1.0 and got[4] == pytest.approx(0.1)


def test_exponential_decay_is_per_epoch_even_when_stepped_per_batch():
    from sotakit.recipes import make_recipe
    from sotakit.train import build_optimizer, build_scheduler, param_groups
    from sotakit.train.recipe_kwargs import optimizer_kwargs, param_group_kwargs, scheduler_kwargs

    def _optimizer_and_schedule(r, model, steps_per_epoch):  # as fit() builds them, through the adapters
        opt = build_optimizer(param_groups(model, **param_group_kwargs(r)), **optimizer_kwargs(r))
        return opt, build_scheduler(opt, **scheduler_kwargs(r, steps_per_epoch=steps_per_epoch))
    r = make_recipe(lr=1.0, lr_scheduler="exponentiallr", lr_gamma=0.5, lr_per_step=True, epochs=3)
    opt, sched = _optimizer_and_schedule(r, nn.Linear(2, 2), steps_per_epoch=10)
    for _ in range(20):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)  # two epochs: gamma ** 2


@pytest.mark.parametrize("method, factors", [("constant", [0.01, 0.01]), ("linear", [0.01, 0.505])])
def test_warmup_longer_than_the_run_stays_in_warmup(method, factors):
    """Issue 9.1: warm-up 2 of a 1-epoch run (and 2 of 1 per step): the milestone lies beyond the end,
    every lr the run uses is a warm-up lr (TorchVision's train.py behaves the same)."""
    got = lrs(dict(lr_scheduler="cosineannealinglr", total=1, warmup=2, warmup_method=method), 1)
    assert got == pytest.approx([0.5 * 0.01])
    got = lrs(dict(lr_scheduler="cosineannealinglr", total=3, warmup=2, warmup_method=method), 2)
    assert got == pytest.approx([0.5 * f for f in factors])
    per_step = lrs(dict(lr_scheduler="steplr", total=4, warmup=8, warmup_method=method, step_size=1), 4)
    expect = [0.01] * 4 if method == "constant" else [0.01 + 0.99 * i / 8 for i in range(4)]
    assert per_step == pytest.approx([0.5 * f for f in expect])
