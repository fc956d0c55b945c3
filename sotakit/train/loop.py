"""One training epoch: a plain loop a reader can follow and a user can copy.

Order of work per step, as TorchVision's reference: forward under autocast, loss, backward (scaled
when a GradScaler is given), optional gradient clipping on unscaled gradients, optimizer step,
EMA update every ``ema_steps`` steps. The loss is checked for a non-finite value before the
backward pass, so a NaN never reaches the weights: the step is skipped and counted, and the run
stops after too many in a row.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from ..evaluate import MetricSums, autocast
from .. import faults
from .ema import update_ema


class NonFiniteLossError(RuntimeError):
    """The loss was NaN or infinite too many steps in a row; none of those steps reached the weights."""

    def __init__(self, epoch: int, step: int, value: float, skipped: int = 0,
                 hint: str = "The last good checkpoint is kept."):
        super().__init__(f"loss is {value} at epoch {epoch + 1}, step {step + 1}"
                         + (f" ({skipped} consecutive non-finite steps skipped before it)" if skipped else "")
                         + f": stopping before the optimizer step. Lower --lr, set --clip-grad-norm, or check the "
                         f"data. {hint}")
        self.epoch, self.step, self.value, self.skipped = epoch, step, value, skipped


class Interrupted(Exception):
    """The run was asked to stop (signal); raised at a step boundary."""

    def __init__(self, step_in_epoch: int):
        super().__init__(f"interrupted after step {step_in_epoch}")
        self.step_in_epoch = step_in_epoch


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, *, criterion: nn.Module,
                    device: torch.device, epoch: int, first_step: int = 0,
                    step_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                    ema=None, ema_steps: int = 32, ema_in_warmup: bool = False,
                    scaler: torch.amp.GradScaler | None = None, amp_dtype: torch.dtype | None = None,
                    clip_grad_norm: float | None = None, channels_last: bool = False, print_freq: int = 10,
                    on_log: Callable[[dict], None] | None = None, on_step: Callable[[int], None] | None = None,
                    should_stop: Callable[[int], bool] | None = None,
                    max_nonfinite_skips: int = 0) -> dict[str, float]:
    """Train for one pass over ``loader``; return mean loss, acc@1, acc@5, img/s, data and epoch time.

    ``first_step`` is the index of the loader's first batch within the epoch (non-zero when resuming
    mid-epoch; the loader then already skips the batches done). ``on_log`` receives a metrics dict
    every ``print_freq`` steps, ``on_step`` the number of steps done after each step (progress bars); ``should_stop(steps_done_in_epoch)`` is polled after each step and a
    true answer raises ``Interrupted``. A step whose loss is not finite (on any rank) is skipped
    (no update, no EMA; the schedule still advances) and counted in ``skipped_steps``; more than
    ``max_nonfinite_skips`` in a row raise ``NonFiniteLossError``.
    """
    model.train()
    sums = MetricSums()
    last_step = first_step + len(loader) - 1
    window = {"loss": 0.0, "c1": 0, "c5": 0, "n": 0, "data": 0.0, "t": time.perf_counter()}
    data_time = 0.0
    skipped, streak = 0, 0
    steps_per_epoch = first_step + len(loader)
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    start = t_data = time.perf_counter()
    step = first_step
    for step, (images, targets) in enumerate(loader, start=first_step):
        waited = time.perf_counter() - t_data
        data_time += waited
        window["data"] += waited
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        buffers = [b.detach().clone() for b in model.buffers()]  # BatchNorm statistics, restored on a skip
        with autocast(device, amp_dtype):
            logits = model(images)
            loss = criterion(logits, targets)
        global_step = epoch * steps_per_epoch + step + 1
        if faults.fault_at("nan_at", global_step, rank):
            loss = loss * float("nan")
        optimizer.zero_grad(set_to_none=True)
        finite = all_ranks(torch.isfinite(loss).item(), device, op="min")  # every rank decides alike, none hangs
        streak = 0 if finite else streak + 1
        if streak > max_nonfinite_skips:
            raise NonFiniteLossError(epoch, step, loss.item() if not torch.isfinite(loss) else float("nan"),
                                     skipped=streak - 1)
        lr = optimizer.param_groups[0]["lr"]
        if finite:
            _backward_and_step(loss, model, optimizer, scaler=scaler, clip_grad_norm=clip_grad_norm)
            if ema is not None:
                update_ema(ema, model, step=step, every=ema_steps, in_warmup=ema_in_warmup)
            n = len(images)
            c1, c5 = sums.add(loss.item(), logits.detach(), targets)
            window.update(loss=window["loss"] + loss.item() * n, c1=window["c1"] + c1, c5=window["c5"] + c5,
                          n=window["n"] + n)
        else:  # no update, no EMA, no metrics, statistics as before; the schedule still advances (it counts steps)
            skipped += 1
            with torch.no_grad():
                for b, saved in zip(model.buffers(), buffers):
                    b.copy_(saved)
        if step_scheduler is not None:
            step_scheduler.step()
        faults.after_step(global_step, rank)
        if on_step is not None:
            on_step(step + 1)
        if on_log is not None and (step + 1) % print_freq == 0 and window["n"]:  # a window of skipped steps logs nothing
            now = time.perf_counter()
            w, n = window, window["n"]
            on_log({"epoch": epoch, "step": step + 1, "loss": w["loss"] / n, "acc1": 100 * w["c1"] / n,
                    "acc5": 100 * w["c5"] / n, "lr": lr, "img_s": w["n"] / max(now - w["t"], 1e-9),
                    "data_time": w["data"]})
            window = {"loss": 0.0, "c1": 0, "c5": 0, "n": 0, "data": 0.0, "t": now}
        # The last step of an epoch is never interrupted: the epoch ends (eval, checkpoint) and the
        # caller stops at the epoch boundary, so no resumed epoch is empty.
        if should_stop is not None and step < last_step and all_ranks(should_stop(step + 1), device, op="max"):
            raise Interrupted(step + 1)
        t_data = time.perf_counter()
    elapsed = time.perf_counter() - start
    local_images = sums.sums[3].item()
    out = sums.result(device)  # reduced over ranks: the epoch's metrics of all data
    out.update(img_s=local_images / max(elapsed, 1e-9), data_time=data_time, epoch_time=elapsed,
               skipped_steps=skipped)
    return out


def _backward_and_step(loss: torch.Tensor, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                       scaler: torch.amp.GradScaler | None, clip_grad_norm: float | None) -> None:
    """Backward (scaled with a GradScaler), optional clipping of the true gradients, optimizer step."""
    if scaler is not None:
        scaler.scale(loss).backward()
        if clip_grad_norm is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()


def all_ranks(flag: bool, device: torch.device, op: str) -> bool:
    """``flag`` combined over DDP ranks (min: all true; max: any true); the flag itself on one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return bool(flag)
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.MAX)
    return bool(t.item())
