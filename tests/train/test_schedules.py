"""fastai's one-cycle and flat-cos: lr and momentum at given steps against the formulas, and resume."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sotakit.recipes import RecipeError, make_recipe, resolve
from sotakit.train import build_optimizer, build_scheduler, scheduler_kwargs


def _cos(start: float, end: float, pct: float) -> float:
    """fastai's SchedCos and torch's cos anneal: a half cosine from start to end."""
    return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


def _run(opt_name: str, n: int, **kw) -> list[tuple[float, float]]:
    opt = build_optimizer([nn.Parameter(torch.zeros(1))], opt=opt_name, lr=1.0)
    s = build_scheduler(opt, total=n, **kw)
    out = []
    for _ in range(n):
        g = opt.param_groups[0]
        out.append((g["lr"], g["betas"][0] if "betas" in g else g["momentum"]))
        opt.step()
        s.step()
    return out


def test_onecycle_has_fastai_s_defaults_on_torch_s_step_grid():
    n = 101  # warm-up ends at step 0.25*101 - 1 = 24.25, the last step is 100
    got = _run("sgd", n, lr_scheduler="onecycle")
    up_end, last = 0.25 * n - 1, n - 1
    for k in (0, 10, 24, 25, 60, 100):
        if k <= up_end:
            pct = k / up_end
            lr, mom = _cos(1 / 25, 1.0, pct), _cos(0.95, 0.85, pct)
        else:
            pct = (k - up_end) / (last - up_end)
            lr, mom = _cos(1.0, 1e-5, pct), _cos(0.85, 0.95, pct)
        assert got[k] == pytest.approx((lr, mom), rel=1e-9), k
    assert got[0] == pytest.approx((0.04, 0.95)) and got[-1] == pytest.approx((1e-5, 0.95))


def test_onecycle_cycles_adam_s_beta1_and_takes_torch_s_values_when_asked():
    got = _run("adamw", 20, lr_scheduler="onecycle", pct_start=0.3, div_final=2.5e5)
    assert got[0] == pytest.approx((0.04, 0.95))
    assert got[3] == pytest.approx((_cos(0.04, 1.0, 3 / 5), _cos(0.95, 0.85, 3 / 5)))
    assert got[5] == pytest.approx((1.0, 0.85))  # torch's peak: step 0.3*20 - 1 = 5
    assert got[12] == pytest.approx((_cos(1.0, 4e-6, 7 / 14), _cos(0.85, 0.95, 7 / 14)))
    assert got[-1] == pytest.approx((1 / 2.5e5, 0.95))


def test_flatcos_holds_three_quarters_then_cosine_to_lr_over_1e5_without_momentum_change():
    got = _run("sgd", 40, lr_scheduler="flatcos")
    assert [lr for lr, _ in got[:30]] == [1.0] * 30
    for k in range(30, 40):
        assert got[k][0] == pytest.approx(_cos(1.0, 1e-5, (k - 30) / 9), rel=1e-9), k
    assert got[-1][0] == pytest.approx(1e-5)
    assert {m for _, m in got} == {0.9}


def test_recipe_steps_fastai_schedules_per_batch_and_refuses_a_second_warmup():
    r = make_recipe(lr_scheduler="onecycle", epochs=3)
    resolved, notes = resolve(r, native_size=28)
    assert resolved.lr_per_step and any("stepped every batch" in n for n in notes)
    kw = scheduler_kwargs(r, steps_per_epoch=7)
    assert (kw["total"], kw["pct_start"], kw["div"], kw["div_final"]) == (21, None, 25.0, 1e5)
    with pytest.raises(RecipeError, match="own warm-up"):
        make_recipe(lr_scheduler="flatcos", lr_warmup_epochs=1)


def test_resume_mid_run_continues_the_same_lr_and_momentum():
    def build():
        torch.manual_seed(0)
        model = nn.Linear(3, 2)
        opt = build_optimizer(model.parameters(), opt="sgd", lr=0.5)
        return model, opt, build_scheduler(opt, lr_scheduler="onecycle", total=30)

    def steps(model, opt, sched, n):
        seen = []
        for _ in range(n):
            model(torch.ones(1, 3)).sum().backward()
            opt.step()
            sched.step()
            seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
        return seen

    model, opt, sched = build()
    straight = steps(model, opt, sched, 30)
    model, opt, sched = build()
    first = steps(model, opt, sched, 13)
    saved = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
    model, opt, sched = build()  # a new process: fresh objects, then the saved state
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    sched.load_state_dict(saved["sched"])
    assert first + steps(model, opt, sched, 17) == straight


@pytest.mark.slow  # three tiny fit() runs
def test_fit_resumed_mid_epoch_under_onecycle_equals_an_uninterrupted_run(image_folder, tmp_path, one_thread):
    from conftest import tiny_recipe
    from sotakit.train import Interrupted, fit, load_checkpoint

    kw = dict(epochs=2, lr_scheduler="onecycle", opt="adamw", lr=3e-3, use_deterministic_algorithms=True)
    full = load_checkpoint(fit(tiny_recipe(image_folder, tmp_path / "full", **kw), verbose=False).run_dir
                           / "checkpoint-last.pt")
    with pytest.raises(Interrupted):
        fit(tiny_recipe(image_folder, tmp_path / "cut", **kw), verbose=False, stop_at=(1, 2))
    run = next((tmp_path / "cut" / "runs").iterdir())
    resumed = load_checkpoint(fit(resume=run, verbose=False).run_dir / "checkpoint-last.pt")
    assert all(torch.equal(full["model"][k], resumed["model"][k]) for k in full["model"])
    group = full["optimizer"]["param_groups"][0]
    assert resumed["optimizer"]["param_groups"][0]["lr"] == group["lr"] == pytest.approx(3e-3 / 1e5)
    assert resumed["optimizer"]["param_groups"][0]["betas"] == group["betas"]
