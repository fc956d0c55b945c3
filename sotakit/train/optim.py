"""Optimizer and learning-rate schedule builders, following TorchVision's reference script.

Parameter groups follow the reference's ``set_weight_decay``: normalization-layer parameters,
biases and transformer embeddings can each get their own weight decay (the blog's "weight decay
tuning" step sets norm_weight_decay=0).
"""

from __future__ import annotations

import torch
from torch import nn

from .schedules import PER_STEP_SCHEDULERS, build_fastai_scheduler

NORM_CLASSES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
                nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)
EMBEDDING_KEYS = ("class_token", "position_embedding", "relative_position_bias_table")


def param_groups(model: nn.Module, *, weight_decay: float, norm_weight_decay: float | None = None,
                 bias_weight_decay: float | None = None,
                 transformer_embedding_decay: float | None = None) -> list[dict]:
    """Trainable parameters split into groups with their weight decay; empty groups are dropped.

    Precedence as in the reference: a custom key (bias, embeddings) wins over the norm rule.
    """
    custom: dict[str, float] = {}
    if bias_weight_decay is not None:
        custom["bias"] = bias_weight_decay
    if transformer_embedding_decay is not None:
        custom.update({k: transformer_embedding_decay for k in EMBEDDING_KEYS})
    groups: dict[str, list] = {"other": [], "norm": [], **{k: [] for k in custom}}
    decay = {"other": weight_decay, "norm": norm_weight_decay, **custom}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name in custom:
                groups[name].append(p)
            elif norm_weight_decay is not None and isinstance(module, NORM_CLASSES):
                groups["norm"].append(p)
            else:
                groups["other"].append(p)
    return [{"params": ps, "weight_decay": decay[k], "name": k} for k, ps in groups.items() if ps]


def build_optimizer(params, *, opt: str, lr: float, momentum: float = 0.9,
                    weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """sgd, sgd-nesterov, rmsprop (eps 0.0316, alpha 0.9 as in the reference), adamw."""
    if opt.startswith("sgd"):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov="nesterov" in opt)
    if opt == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay, eps=0.0316,
                                   alpha=0.9)
    if opt == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {opt!r}: use sgd, sgd-nesterov, rmsprop or adamw")


def build_scheduler(optimizer: torch.optim.Optimizer, *, lr_scheduler: str, total: int, warmup: int = 0,
                    warmup_method: str = "constant", warmup_decay: float = 0.01, step_size: int = 30,
                    gamma: float = 0.1, lr_min: float = 0.0, pct_start: float | None = None,
                    div: float = 25.0, div_final: float = 1e5) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule over ``total`` units (epochs, or steps when the caller steps per batch).

    ``warmup``, ``step_size`` and ``total`` are in the same unit. Cosine runs over ``total - warmup``.
    ``onecycle`` and ``flatcos`` (fastai's, per step; ``pct_start``, ``div``, ``div_final``) are in
    ``schedules``; they bring their own warm-up.
    """
    if lr_scheduler in PER_STEP_SCHEDULERS:
        if warmup > 0:
            raise ValueError(f"{lr_scheduler} has its own warm-up; drop the warm-up ({warmup})")
        return build_fastai_scheduler(optimizer, lr_scheduler=lr_scheduler, total=total, pct_start=pct_start,
                                      div=div, div_final=div_final)
    if lr_scheduler == "steplr":
        main = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    elif lr_scheduler == "cosineannealinglr":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup),
                                                          eta_min=lr_min)
    elif lr_scheduler == "exponentiallr":
        main = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    else:
        raise ValueError(f"unknown lr_scheduler {lr_scheduler!r}: use steplr, cosineannealinglr, "
                         "exponentiallr, onecycle or flatcos")
    if warmup <= 0:
        return main
    if warmup_method == "linear":
        warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=warmup_decay, total_iters=warmup)
    elif warmup_method == "constant":
        warm = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=warmup_decay, total_iters=warmup)
    else:
        raise ValueError(f"unknown warmup method {warmup_method!r}: use linear or constant")
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[warmup])
