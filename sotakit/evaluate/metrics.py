"""Top-k accuracy counts; soft (mixed) targets count against their largest class."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[int]:
    """Number of rows whose target class is among the top-k logits, for each k (k capped at classes)."""
    if target.ndim == 2:
        target = target.argmax(dim=1)
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hit = pred.eq(target.unsqueeze(1))
    return [int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]
