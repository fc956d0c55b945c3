"""Precise BatchNorm (issue 12): running statistics = the average of the batch statistics of N images."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sotakit.train.precise_bn import precise_bn_batches, update_precise_bn


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1),
                         nn.BatchNorm2d(2))


def _batch_stats(model: nn.Module, batches: list[torch.Tensor]) -> dict[int, tuple]:
    """Per BatchNorm (by index): the mean over batches of its input's batch mean and unbiased variance,
    computed from hooks on a copy in train mode (what pycls accumulates with momentum 1.0)."""
    m = copy.deepcopy(model).train()
    seen: dict[int, list] = {}
    bns = [i for i, layer in enumerate(m) if isinstance(layer, nn.BatchNorm2d)]
    for i in bns:
        m[i].register_forward_hook(lambda mod, inp, out, i=i: seen.setdefault(i, []).append(inp[0].detach()))
    with torch.no_grad():
        for x in batches:
            m(x)
    return {i: (torch.stack([x.mean((0, 2, 3)) for x in xs]).mean(0),
                torch.stack([x.var((0, 2, 3), unbiased=True) for x in xs]).mean(0)) for i, xs in seen.items()}


def test_running_stats_are_the_average_of_the_batch_stats_of_the_samples():
    torch.manual_seed(1)
    images = torch.randn(20, 3, 6, 6) * 3 + 1
    loader = DataLoader(TensorDataset(images, torch.zeros(20)), batch_size=4)
    model = _model().eval()
    want = _batch_stats(model, list(images.split(4))[:3])  # 12 samples of batch 4: the first 3 batches
    assert update_precise_bn(model, loader, samples=12) == 3
    for i, (mean, var) in want.items():
        assert torch.allclose(model[i].running_mean, mean, atol=1e-5)
        assert torch.allclose(model[i].running_var, var, atol=1e-5)
        assert model[i].momentum == 0.1  # restored
    assert not model.training  # mode restored
    every = _batch_stats(model, list(images.split(4)))
    assert not torch.allclose(model[1].running_mean, every[1][0], atol=1e-3)  # only the samples asked for


def test_number_of_batches_follows_pycls():
    assert precise_bn_batches(8192, batch_size=256, batches=1000) == 32
    assert precise_bn_batches(8192, batch_size=128, batches=1000, world_size=8) == 8
    assert precise_bn_batches(8192, batch_size=256, batches=10) == 10  # capped at the loader's length
    assert precise_bn_batches(100, batch_size=256, batches=10) == 1


@pytest.mark.slow  # trains with fit()
def test_fit_recomputes_model_and_ema_statistics_before_each_evaluation(image_folder, tmp_path, monkeypatch,
                                                                         one_thread):
    import importlib

    from conftest import tiny_recipe
    fit_module = importlib.import_module("sotakit.train.fit")  # sotakit.train.fit is also the function
    calls, real = [], fit_module.update_precise_bn

    def spy(model, loader, **kw):
        calls.append((model, kw["samples"], real(model, loader, **kw)))
        return calls[-1][2]

    monkeypatch.setattr(fit_module, "update_precise_bn", spy)
    fit_module.fit(tiny_recipe(image_folder, tmp_path, epochs=2, model_ema=True, model_ema_steps=1,
                               precise_bn=16), verbose=False)
    # each epoch: the model, then the EMA's copy, on 16 images = 2 batches of 8
    assert [(samples, batches) for _, samples, batches in calls] == [(16, 2)] * 4
    model, ema = calls[0][0], calls[1][0]
    assert model is not ema and [c[0] for c in calls] == [model, ema, model, ema]
