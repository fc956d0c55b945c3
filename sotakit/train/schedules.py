"""fastai's one-cycle and flat-cos schedules, built from ``torch.optim.lr_scheduler``.

Both are stepped every batch (``total`` in steps). Which source each value follows:

* ``onecycle``: torch's ``OneCycleLR`` with fastai's ``fit_one_cycle`` defaults instead of torch's:
  ``pct_start`` 0.25 (torch 0.3), start ``lr/div`` with div 25 (same), final ``lr/div_final`` with
  div_final 1e5 (torch ends at lr/2.5e5), momentum (or Adam's beta1) cosine 0.95 -> 0.85 -> 0.95
  (same). The step grid is torch's: the warm-up ends at step ``pct_start*total - 1`` and the last
  step reaches ``lr/div_final`` exactly (fastai schedules batch k at k/N and never reaches its end).
  ``--lr-pct-start 0.3 --lr-div-final 2.5e5`` gives torch's own defaults.
* ``flatcos``: fastai's ``fit_flat_cos``: the lr stays at ``lr`` for ``pct_start`` (0.75) of the
  steps, then a half cosine takes it to ``lr/div_final`` at the last step; no momentum schedule.
"""

from __future__ import annotations

import math

import torch
from torch.optim import lr_scheduler as sched

from ..recipes.recipe import PER_STEP_SCHEDULERS

__all__ = ["PER_STEP_SCHEDULERS", "build_fastai_scheduler", "build_flat_cos", "build_one_cycle"]
FASTAI_PCT_START = {"onecycle": 0.25, "flatcos": 0.75}
FASTAI_MOMENTUMS = (0.95, 0.85)  # (max, base): fastai's moms=(0.95, 0.85, 0.95)


class _OneCycle(sched.OneCycleLR):
    """OneCycleLR that holds its final lr and momentum once past the last step (the loop steps the
    schedule after every batch, so once after the run's last; torch would anneal past the end)."""

    def get_lr(self):
        if self.last_epoch >= self.total_steps:
            return [g["lr"] for g in self.optimizer.param_groups]
        return super().get_lr()


def build_one_cycle(optimizer: torch.optim.Optimizer, *, total: int, pct_start: float = 0.25,
                    div: float = 25.0, div_final: float = 1e5) -> sched.OneCycleLR:
    """OneCycleLR peaking at each group's current lr; momentum cycled when the optimizer has one."""
    cycle_momentum = any(k in optimizer.defaults for k in ("momentum", "betas"))
    return _OneCycle(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=max(1, total),
        pct_start=pct_start, div_factor=div, final_div_factor=div_final / div,  # torch's: from lr/div
        cycle_momentum=cycle_momentum, max_momentum=FASTAI_MOMENTUMS[0], base_momentum=FASTAI_MOMENTUMS[1])


def build_flat_cos(optimizer: torch.optim.Optimizer, *, total: int, pct_start: float = 0.75,
                   div_final: float = 1e5) -> sched.LambdaLR:
    """lr held for ``flat = round(pct_start * total)`` steps, then a half cosine reaching lr/div_final at
    the last step (``total - 1``) and staying there.

    A LambdaLR of the closed form rather than CosineAnnealingLR, whose cosine turns back up after
    ``T_max`` and whose recursive form drifts; the factor multiplies each group's own lr.
    """
    flat, end = min(max(0, round(pct_start * total)), total), 1.0 / div_final

    def factor(step: int) -> float:
        pct = min(1.0, max(0.0, (step - flat) / max(1, total - 1 - flat)))
        return end + (1.0 - end) * (1 + math.cos(math.pi * pct)) / 2

    return sched.LambdaLR(optimizer, factor)


def build_fastai_scheduler(optimizer: torch.optim.Optimizer, *, lr_scheduler: str, total: int,
                           pct_start: float | None = None, div: float = 25.0,
                           div_final: float = 1e5) -> sched.LRScheduler:
    """``onecycle`` or ``flatcos`` over ``total`` steps; ``pct_start`` None takes fastai's for it."""
    pct = FASTAI_PCT_START[lr_scheduler] if pct_start is None else pct_start
    if lr_scheduler == "onecycle":
        return build_one_cycle(optimizer, total=total, pct_start=pct, div=div, div_final=div_final)
    return build_flat_cos(optimizer, total=total, pct_start=pct, div_final=div_final)
