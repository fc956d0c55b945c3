"""EMA against its formula, the warm-up reset, label-smoothed loss, one epoch's stop rules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sotakit.train import NonFiniteLossError, build_ema, train_one_epoch, update_ema


def test_ema_follows_the_formula_for_parameters_and_buffers():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = build_ema(m, decay=0.9)
    w0 = m[0].weight.detach().clone()
    update_ema(ema, m, step=0, every=4, in_warmup=False)  # first update copies
    assert torch.equal(ema.module[0].weight, w0)
    with torch.no_grad():
        m[0].weight.add_(1.0)
        m[1].running_mean.fill_(2.0)
    assert not update_ema(ema, m, step=3, every=4, in_warmup=False)  # not a multiple of 4: no update
    assert update_ema(ema, m, step=4, every=4, in_warmup=False)
    torch.testing.assert_close(ema.module[0].weight, 0.9 * w0 + 0.1 * (w0 + 1.0))
    torch.testing.assert_close(ema.module[1].running_mean, 0.9 * torch.zeros(2) + 0.1 * 2.0)


def test_ema_keeps_copying_during_warmup():
    m = nn.Linear(2, 2)
    ema = build_ema(m, decay=0.9)
    for _ in range(3):
        with torch.no_grad():
            m.weight.add_(1.0)
        update_ema(ema, m, step=0, every=1, in_warmup=True)
        assert ema.n_averaged.item() == 0
        assert torch.equal(ema.module.weight, m.weight)


def test_label_smoothing_loss_value():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    target = torch.tensor([0])
    eps, k = 0.1, 3
    logp = torch.log_softmax(logits, dim=1)[0]
    expected = -((1 - eps) * logp[0] + eps / k * logp.sum())
    got = nn.CrossEntropyLoss(label_smoothing=eps)(logits, target)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


class _NaNAt(nn.Module):
    def __init__(self, step):
        super().__init__()
        self.step, self.calls = step, 0

    def forward(self, logits, target):
        loss = nn.functional.cross_entropy(logits, target)
        self.calls += 1
        return loss * math.nan if self.calls - 1 == self.step else loss


def _run_with_nan_at(step: int, max_skips: int):
    """Train a linear model 5 steps with a NaN loss at ``step``; return the weights after each step."""
    torch.manual_seed(0)
    m = nn.Linear(4, 3)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    data = [(torch.randn(5, 4), torch.randint(0, 3, (5,))) for _ in range(5)]
    after = []
    stats = train_one_epoch(m, data, opt, criterion=_NaNAt(step), device=torch.device("cpu"), epoch=0,
                            on_step=lambda done: after.append(m.weight.detach().clone()),
                            max_nonfinite_skips=max_skips)
    return after, stats


def test_non_finite_loss_stops_before_the_weights_change():
    torch.manual_seed(0)
    m = nn.Linear(4, 3)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    data = [(torch.randn(5, 4), torch.randint(0, 3, (5,))) for _ in range(4)]
    before = {}

    def remember(rec):
        before.update({k: v.clone() for k, v in m.state_dict().items()})

    with pytest.raises(NonFiniteLossError, match="epoch 1, step 3") as e:
        train_one_epoch(m, data, opt, criterion=_NaNAt(2), device=torch.device("cpu"), epoch=0,
                        print_freq=1, on_log=remember)
    assert e.value.step == 2
    for k, v in m.state_dict().items():  # weights are those after step 1
        assert torch.equal(v, before[k]) and torch.isfinite(v).all()


def test_non_finite_step_is_skipped_and_counted():
    after, stats = _run_with_nan_at(2, max_skips=1)
    assert stats["skipped_steps"] == 1 and len(after) == 5
    clean, _ = _run_with_nan_at(99, max_skips=1)
    assert torch.equal(after[1], clean[1])  # steps 0 and 1 as without the fault
    assert torch.equal(after[2], after[1])  # the NaN step changed nothing
    assert not torch.equal(after[3], after[2]) and torch.isfinite(after[-1]).all()  # and training went on


def test_clip_grad_norm_bounds_the_update():
    m = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        m.weight.zero_()
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    data = [(torch.tensor([[100.0, 0.0]]), torch.tensor([[1.0]]))]
    train_one_epoch(m, data, opt, criterion=nn.MSELoss(), device=torch.device("cpu"), epoch=0,
                    clip_grad_norm=0.5)
    assert m.weight.norm().item() == pytest.approx(0.5, rel=1e-5)


def test_bf16_autocast_on_cpu_and_the_fallback(monkeypatch):
    from sotakit.recipes import make_recipe
    from sotakit.train.fit import amp_dtype_for as amp_dtype_from_kwargs
    from sotakit.train.recipe_kwargs import amp_kwargs

    def amp_dtype_for(recipe, device):  # the recipe through its adapter, as fit() passes it
        return amp_dtype_from_kwargs(**amp_kwargs(recipe), device=device)
    seen = []
    m = nn.Linear(4, 3)
    m.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    data = [(torch.randn(5, 4), torch.randint(0, 3, (5,)))]
    train_one_epoch(m, data, torch.optim.SGD(m.parameters(), lr=0.1), criterion=nn.CrossEntropyLoss(),
                    device=torch.device("cpu"), epoch=0, amp_dtype=torch.bfloat16)
    assert seen == [torch.bfloat16] and m.weight.dtype == torch.float32  # fp32 master weights
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert amp_dtype_for(make_recipe(amp=True), cpu) == (torch.bfloat16, None)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    dtype, note = amp_dtype_for(make_recipe(amp=True), cpu)
    assert dtype is None and "no native bfloat16" in note
    assert amp_dtype_for(make_recipe(amp=False), cpu) == (None, None)
    assert (amp_dtype_for(make_recipe(amp=True, amp_dtype="float16"), torch.device("cuda"))
            == (torch.float16, None))


@pytest.mark.gpu
def test_float16_autocast_with_grad_scaler_on_cuda():
    """float16 on CUDA: the forward runs in float16, the GradScaler's steps reach the float32 weights
    (clipping on unscaled gradients on the way) and its scale stays finite."""
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(8, 10)).to(cuda)
    seen = []
    m[-1].register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    before = [p.detach().clone() for p in m.parameters()]
    scaler = torch.amp.GradScaler("cuda")
    data = [(torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))) for _ in range(4)]
    stats = train_one_epoch(m, data, torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
                            criterion=nn.CrossEntropyLoss(), device=cuda, epoch=0, scaler=scaler,
                            amp_dtype=torch.float16, clip_grad_norm=1.0)
    assert seen == [torch.float16] * 4 and all(p.dtype == torch.float32 for p in m.parameters())
    assert all(not torch.equal(b, p) for b, p in zip(before, m.parameters()))  # every layer was updated
    assert math.isfinite(scaler.get_scale()) and scaler.get_scale() > 0
    assert math.isfinite(stats["loss"]) and stats["n"] == 32 and stats["skipped_steps"] == 0
