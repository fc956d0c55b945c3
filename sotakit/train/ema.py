"""EMA of parameters and buffers, as TorchVision's reference (AveragedModel with use_buffers=True).

The decay is adjusted so the averaging horizon does not depend on batch size, update interval or
epoch count (``train.recipe_kwargs.ema_alpha``, the pycls trick the blog adopted). During warm-up epochs the
counter is reset after each update so the EMA keeps copying the weights instead of averaging the
poor early ones.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def build_ema(model: nn.Module, *, decay: float, device: torch.device | str | None = None) -> AveragedModel:
    """An AveragedModel whose update is ``ema = decay * ema + (1 - decay) * current``."""
    return AveragedModel(model, device=device, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def update_ema(ema: AveragedModel, model: nn.Module, *, step: int, every: int, in_warmup: bool) -> bool:
    """Update every ``every`` steps (step counted within the epoch, from 0, as the reference does)."""
    if step % every != 0:
        return False
    ema.update_parameters(model)
    if in_warmup:
        ema.n_averaged.fill_(0)  # keep copying weights during warm-up
    return True
