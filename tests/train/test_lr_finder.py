"""The LR range test: the valley lands in a known good range, the suggestions follow fastai's rules,
and the model, optimizer, BatchNorm statistics and RNGs come back exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sotakit import lr_find
from sotakit.train.lr_finder import LRFindError, minimum, steep, suggest, trimmed, valley


def _regression(n=2048, d=8, batch=64):
    """Least squares on x ~ N(0, I): the MSE Hessian is 2I, so plain SGD diverges above lr 1 and converges
    fastest at lr 0.5; below ~1e-3 a 100-step run barely moves."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, generator=torch.Generator())


def test_valley_falls_inside_the_known_good_range():
    torch.manual_seed(0)
    model = nn.Linear(8, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = lr_find(model, _regression(), opt, criterion=nn.MSELoss())
    assert 1e-2 <= res.valley <= 1.0, res.suggestions
    assert res.stopped_early  # the ramp passed lr 1, where SGD diverges: smoothed loss > 4x best
    assert res.lrs[0] == 1e-7 and res.lrs[1] == pytest.approx(1e-7 * (1e8) ** (1 / 100))


def _bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3))


def _images():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(96, 1, 8, 8, generator=g), torch.arange(96) % 3
    gen = torch.Generator().manual_seed(5)
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=gen)


def _train(model, opt, loader, steps=6):
    for _, (x, y) in zip(range(steps), loader):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("amp_dtype, clip", [(None, None), (torch.bfloat16, 1.0)], ids=["fp32", "bf16-clip"])
def test_training_after_the_finder_equals_training_without_it(amp_dtype, clip):
    def setup():
        model, loader = _bn_net(), _images()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        _train(model, opt, loader, steps=3)  # momentum buffers and BN statistics that must survive
        return model, opt, loader

    model, opt, loader = setup()
    torch.manual_seed(123)
    expected = _train(model, opt, loader)
    expected_draw = torch.rand(3)

    model, opt, loader = setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = {i: s["momentum_buffer"].clone() for i, s in opt.state_dict()["state"].items()}
    torch.manual_seed(123)
    res = lr_find(model, loader, opt, criterion=nn.CrossEntropyLoss(), num_it=20, amp_dtype=amp_dtype,
                  clip_grad_norm=clip)
    assert len(res.lrs) > 5 and res.raw_losses[0] > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # incl. running_mean/var
    assert all(torch.equal(opt_before[i], s["momentum_buffer"]) for i, s in opt.state_dict()["state"].items())
    assert opt.param_groups[0]["lr"] == 0.05 and all(p.grad is None for p in model.parameters())
    got = _train(model, opt, loader)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert torch.equal(torch.rand(3), expected_draw)  # the global RNG continues as it would have


def test_float16_with_a_grad_scaler_restores_the_scaler():
    model, loader = _bn_net(), _images()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    lr_find(model, loader, opt, criterion=nn.CrossEntropyLoss(), num_it=12, amp_dtype=torch.float16,
            scaler=scaler)
    assert scaler.get_scale() == 1024.0 and opt.state_dict()["state"] == {}


def test_nan_loss_ends_the_series_and_is_never_stepped_with():
    class NanAfter(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k, self.calls = k, 0

        def forward(self, out, y):
            self.calls += 1
            loss = nn.functional.mse_loss(out, y)
            return loss * float("nan") if self.calls > self.k else loss

    torch.manual_seed(0)
    model = nn.Linear(8, 1, bias=False)
    res = lr_find(model, _regression(), torch.optim.SGD(model.parameters(), lr=0.1), criterion=NanAfter(60))
    assert len(res.lrs) == 61 and math.isnan(res.raw_losses[-1]) and math.isnan(res.losses[-1])
    assert res.stopped_early and all(math.isfinite(v) for v in res.suggestions.values())


def test_suggestions_on_a_hand_built_series():
    lrs = list(np.logspace(-6, 0, 40))
    # flat, then a strictly falling stretch from index 10 to 29, then rising
    losses = [2.0] * 10 + [2.0 - 0.05 * i for i in range(1, 21)] + [1.0 + 0.3 * i for i in range(10)]
    lr, loss = trimmed(lrs, losses, num_it=40)  # drops the first 4 and the last 5
    assert len(lr) == 31 and lr[0] == lrs[4]
    # longest strictly decreasing run: starts at the last 2.0 (index 9 - 4 = 5) and ends at 1.0 (25)
    # (max_start = max_end - lds = 25 - 21 = 4); sections = 21/3 = 7: index 4 + 7 + 3 = 14
    assert valley(lr, loss) == lr[14]
    assert minimum(lr, loss) == pytest.approx(lr[int(np.argmin(loss))] / 10)
    grads = np.diff(loss) / np.diff(np.log(lr))
    assert steep(lr, loss) == lr[int(np.argmin(grads))]
    with_nan = losses[:20] + [float("nan")] * 20
    cut, _ = trimmed(lrs, with_nan, num_it=40)
    assert len(cut) == 16  # points 4..19, cut at the first NaN
    with pytest.raises(LRFindError, match="only 2 usable points"):
        suggest(lrs[:7], losses[:7], num_it=7)  # fastai #3658 gave an IndexError here


def test_a_ddp_model_is_refused_with_what_to_do(tmp_path):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(nn.Linear(8, 1))
        with pytest.raises(LRFindError, match="runs on one process: pass the model before"):
            lr_find(ddp, _regression(), torch.optim.SGD(ddp.parameters(), lr=0.1), criterion=nn.MSELoss())
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two tiny fit() runs
def test_train_lr_auto_equals_a_run_at_the_valley_and_notes_it(image_folder, tmp_path, one_thread):
    from conftest import tiny_recipe
    from sotakit.train import fit, load_checkpoint

    auto = fit(tiny_recipe(image_folder, tmp_path / "auto", epochs=1), verbose=False,
               lr_find={"num_it": 30, "end_lr": 1.0})
    text = (auto.run_dir / "recipe.toml").read_text()
    assert "--lr auto: lr-find over" in text and "training at the valley" in text
    chosen = load_checkpoint(auto.run_dir / "checkpoint-last.pt")["recipe"]["lr"]
    plain = fit(tiny_recipe(image_folder, tmp_path / "plain", epochs=1, lr=chosen), verbose=False)
    a, b = (load_checkpoint(r.run_dir / "checkpoint-last.pt")["model"] for r in (auto, plain))
    assert all(torch.equal(a[k], b[k]) for k in a)
