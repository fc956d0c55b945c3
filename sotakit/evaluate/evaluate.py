"""Evaluation: loss and acc@1/acc@5 over a loader, exact under DDP (each image counted once)."""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from .. import faults
from .metrics import MetricSums, confusion_matrix

Progress = Callable[[int, int], None]  # progress(batches_done, batches_total): train.progress.TaskProgress


class StopEvaluation(Exception):
    """``should_stop`` answered true between two evaluation batches (a signal arrived)."""


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast context for ``dtype`` on ``device``; a no-op when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(images: torch.Tensor, targets: torch.Tensor, *, device: torch.device,
              channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on ``device`` (asynchronously from pinned memory), images channels-last if asked."""
    images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets


@torch.inference_mode()
def evaluate(model: nn.Module, loader, *, device: torch.device | str = "cpu",
             amp_dtype: torch.dtype | None = None, channels_last: bool = False,
             criterion: nn.Module | None = None, progress: Progress | None = None,
             should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
    """Mean loss, acc@1 and acc@5 (percent), the image count ``n``, and ECE (percent, 15 bins), NLL, Brier
    score and the reliability bins; summed over all ranks.

    ``progress(batches_done, batches_total)`` is called after every batch when given; ``should_stop()``
    (the same answer on every rank) too, and a true answer raises StopEvaluation, so a signal is
    honoured within one batch rather than after the whole split."""
    device = torch.device(device)
    criterion = criterion or nn.CrossEntropyLoss()
    model.eval()
    sums = MetricSums(calibration=True)
    polls = _common_batches(len(loader), device) if should_stop is not None else 0
    for i, (images, targets) in enumerate(loader, 1):
        images, targets = to_device(images, targets, device=device, channels_last=channels_last)
        with autocast(device, amp_dtype):
            logits = model(images)
        loss = criterion(logits.float(), targets)
        sums.add(loss.item(), logits, targets)
        faults.in_evaluation()  # tests only (sotakit/faults.py)
        if progress is not None:
            progress(i, len(loader))
        if i <= polls and should_stop():
            raise StopEvaluation(f"stopped after {i} of {len(loader)} evaluation batches")
    return sums.result(device)


def _common_batches(n: int, device: torch.device) -> int:
    """The batches every rank has (exact DDP evaluation gives ranks counts one apart): ``should_stop`` is a
    collective and is asked only that often, so every rank asks it the same number of times."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return n
    t = torch.tensor([n], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


@torch.inference_mode()
def confusion(model: nn.Module, loader, *, num_classes: int, device: torch.device | str = "cpu",
              amp_dtype: torch.dtype | None = None, progress: Progress | None = None) -> torch.Tensor:
    """The confusion matrix of ``model`` over ``loader`` (rows: true class, columns: top-1 prediction).

    Single process: under DDP each rank gets the counts of its own share of the images.
    """
    device = torch.device(device)
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for i, (images, targets) in enumerate(loader, 1):
        with autocast(device, amp_dtype):
            logits = model(images.to(device))
        cm += confusion_matrix(logits.argmax(dim=1).cpu(), targets, num_classes)
        if progress is not None:
            progress(i, len(loader))
    return cm
