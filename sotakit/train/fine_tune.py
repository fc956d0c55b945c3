"""``--freeze-epochs K``: fastai's ``fine_tune`` schedule (``fastai/callback/schedule.py``), as param
groups and one per-step LambdaLR, so fit()'s loop, checkpoints and exact resume stay as they are.

fastai, for ``fine_tune(epochs, base_lr, freeze_epochs=K)`` on a learner with three layer groups
(early body, late body, head):

1. ``freeze()``: only the head trains, and normalization layers keep training (``train_bn``); then
   ``fit_one_cycle(K, slice(base_lr), pct_start=0.99)``: the head peaks at ``base_lr``, the body
   groups (their normalization layers) at ``base_lr / 10``; ``div`` 25, ``div_final`` 1e5.
2. ``base_lr /= 2``; ``unfreeze()`` (the optimizer state is cleared: fit() does that at epoch K);
   ``fit_one_cycle(epochs, slice(base_lr / 100, base_lr), pct_start=0.3, div=5)``: the groups peak at
   ``even_mults`` of that slice, ``b/100, b/10, b``.

Here ``--epochs`` counts both phases (fastai's ``fine_tune(E, freeze_epochs=K)`` runs K + E). Frozen
parameters get a learning rate of 0 rather than ``requires_grad=False``: they do not change (SGD and
AdamW both scale the whole update, weight decay included, by the lr) and the optimizer keeps one set
of groups for the whole run, which is what a checkpoint restores. fastai's momentum cycling
(0.95-0.85-0.95) is not reproduced: the recipe's optimizer momentum stays fixed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .transfer import head_name

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def layer_stages(model: nn.Module, *, num_classes: int) -> dict[int, int]:
    """id(parameter) -> stage: 0 early body, 1 late body, 2 head (the classifier with ``num_classes``).

    torchvision ResNets split before ``layer3`` as fastai's ``_resnet_split`` (body[:6], body[6:]); any
    other model splits its body parameters in two halves by count, in the order the model holds them.
    """
    head = head_name(model, num_classes)
    if head is None:
        raise ValueError(f"--freeze-epochs: the model has no classifier layer with {num_classes} outputs (a "
                         "Linear, or SqueezeNet's 1x1 convolution) to train alone; drop --freeze-epochs")
    named = list(model.named_parameters())
    head_ids = {id(p) for n, p in named if n.startswith(head + ".")}
    body = [(n, p) for n, p in named if id(p) not in head_ids]
    if any(n.startswith("layer3.") for n, _ in body):
        late = next(i for i, (n, _) in enumerate(body) if n.startswith("layer3."))
    else:
        total, seen, late = sum(p.numel() for _, p in body), 0, len(body)
        for i, (_, p) in enumerate(body):
            if seen >= total / 2:
                late = i
                break
            seen += p.numel()
    stages = {id(p): (0 if i < late else 1) for i, (_, p) in enumerate(body)}
    stages.update({i: 2 for i in head_ids})
    return stages


def norm_params(model: nn.Module) -> set[int]:
    """ids of the parameters of normalization layers (they train while the body is frozen)."""
    return {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False)}


def fine_tune_groups(model: nn.Module, groups: list[dict], *, num_classes: int) -> list[dict]:
    """``param_groups``' groups split by stage and by norm/other, each with ``stage`` and ``norm`` keys
    (kept by the optimizer and its state dict)."""
    stages, norms = layer_stages(model, num_classes=num_classes), norm_params(model)
    out = []
    for g in groups:
        split: dict[tuple[int, bool], list] = {}
        for p in g["params"]:
            split.setdefault((stages[id(p)], id(p) in norms), []).append(p)
        for (stage, norm), ps in sorted(split.items()):
            out.append({**g, "params": ps, "stage": stage, "norm": norm,
                        "name": f"{g.get('name', 'group')}/stage{stage}{'/norm' if norm else ''}"})
    return out


def one_cycle(pos: float, *, lr_max: float, div: float, pct_start: float, div_final: float = 1e5) -> float:
    """fastai's ``fit_one_cycle`` lr at position ``pos`` in [0, 1): cosine from lr_max/div up to lr_max over
    ``pct_start``, then cosine down to lr_max/div_final (``combined_cos`` of two ``SchedCos``)."""
    def sched_cos(start: float, end: float, p: float) -> float:
        return start + (1 + math.cos(math.pi * (1 - p))) * (end - start) / 2
    if pos < pct_start:
        return sched_cos(lr_max / div, lr_max, pos / pct_start)
    return sched_cos(lr_max, lr_max / div_final, (pos - pct_start) / (1 - pct_start))


def fine_tune_lr(step: int, *, stage: int, norm: bool, lr: float, freeze_steps: int, total_steps: int,
                 lr_mult: float = 100.0) -> float:
    """The lr of a group at ``step`` (0-based, the batch about to run; fastai places batch k of N at k/N)."""
    if step < freeze_steps:  # phase 1: slice(lr): the head at lr, the body groups at lr/10, only norms train
        if stage < 2 and not norm:
            return 0.0
        return one_cycle(step / freeze_steps, lr_max=lr if stage == 2 else lr / 10, div=25.0, pct_start=0.99)
    half = lr / 2  # phase 2: slice(half/lr_mult, half) spread geometrically over the 3 stages (even_mults)
    peak = half / lr_mult * lr_mult ** (stage / 2)
    pos = (step - freeze_steps) / max(1, total_steps - freeze_steps)
    return one_cycle(pos, lr_max=peak, div=5.0, pct_start=0.3)


def build_fine_tune_scheduler(optimizer: torch.optim.Optimizer, *, lr: float, freeze_steps: int,
                              total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR (stepped every batch) giving each group ``fine_tune_lr``; the groups were built with
    ``lr`` as their base, so each lambda is a factor of it."""
    def factor(group):
        return lambda step: fine_tune_lr(step, stage=group["stage"], norm=group["norm"], lr=lr,
                                         freeze_steps=freeze_steps, total_steps=total_steps) / lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(g) for g in optimizer.param_groups])
