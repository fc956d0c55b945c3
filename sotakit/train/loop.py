"""One training epoch: a plain loop a reader can follow and a user can copy.

Order of work per step, as TorchVision's reference: forward under autocast, loss, backward (scaled
when a GradScaler is given), optional gradient clipping on unscaled gradients, optimizer step,
EMA update every ``ema_steps`` steps. The loss is checked for a non-finite value before the
backward pass, so a NaN never reaches the weights: the step is skipped and counted, and the run
stops after too many in a row.

Nothing per step waits for the device but that check: the metrics are summed on the device and read
once per logging window, and under DDP the check and the stop request share one small all-reduce, so
a step costs one host sync and (under DDP) one collective besides DDP's own gradient all-reduce.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable

import torch
from torch import nn

from .. import faults
from ..evaluate import MetricSums, autocast, to_device
from ..evaluate.metrics import batch_sums
from .distributed import any_rank, current_rank, is_distributed
from .ema import update_ema


class NonFiniteLossError(RuntimeError):
    """The loss was NaN or infinite too many steps in a row; none of those steps reached the weights."""

    def __init__(self, epoch: int, step: int, value: float, skipped: int = 0,
                 hint: str = "The last good checkpoint is kept."):
        super().__init__(f"loss is {value} at epoch {epoch + 1}, step {step + 1}"
                         + (f" ({skipped} consecutive non-finite steps skipped before it)" if skipped else "")
                         + ": stopping before the optimizer step. Lower --lr, set --clip-grad-norm, or "
                           f"check the data. {hint}")
        self.epoch, self.step, self.value, self.skipped = epoch, step, value, skipped


class Interrupted(Exception):
    """The run was asked to stop (``signum``: the signal, None for ``stop_at``); raised at a step boundary."""

    def __init__(self, step_in_epoch: int, signum: int | None = None, message: str | None = None):
        super().__init__(message or f"interrupted after step {step_in_epoch}")
        self.step_in_epoch, self.signum = step_in_epoch, signum


class _Window:
    """Sums over the steps since the last log line, kept on the device (``batch_sums`` rows): what
    ``on_log`` reports every ``print_freq`` steps, read from the device then and only then."""

    def __init__(self, device: torch.device | str):
        self.device = device
        self.reset(time.perf_counter())

    def reset(self, now: float) -> None:
        self.sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        self.n, self.data, self.t = 0, 0.0, now

    def add(self, sums: torch.Tensor) -> None:
        self.sums += sums
        self.n += 1  # steps with metrics: a window of skipped steps logs nothing

    def record(self, *, epoch: int, step: int, lr: float, now: float) -> dict[str, float]:
        loss, c1, c5, n = self.sums.tolist()
        return {"epoch": epoch, "step": step, "loss": loss / n, "acc1": 100 * c1 / n, "acc5": 100 * c5 / n,
                "lr": lr, "img_s": n / max(now - self.t, 1e-9), "data_time": self.data}


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, *, criterion: nn.Module,
                    device: torch.device, epoch: int, first_step: int = 0,
                    step_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                    ema=None, ema_steps: int = 32, ema_in_warmup: bool = False,
                    scaler: torch.amp.GradScaler | None = None, amp_dtype: torch.dtype | None = None,
                    clip_grad_norm: float | None = None, channels_last: bool = False, print_freq: int = 10,
                    on_log: Callable[[dict], None] | None = None,
                    on_step: Callable[[int], None] | None = None,
                    should_stop: Callable[[int], bool] | None = None,
                    max_nonfinite_skips: int = 0) -> dict[str, float]:
    """Train for one pass over ``loader``; return mean loss, acc@1, acc@5, img/s, data and epoch time.

    ``first_step`` is the index of the loader's first batch within the epoch (non-zero when resuming
    mid-epoch; the loader then already skips the batches done). ``on_log`` receives a metrics dict
    every ``print_freq`` steps, ``on_step`` the number of steps done after each step (progress,
    periodic checkpoints); ``should_stop(steps_done_in_epoch)`` is polled for each step and a true
    answer (on any rank) raises ``Interrupted`` once the step is done: after the step on one process,
    before its backward pass under DDP (with the non-finite check, in one all-reduce), so a signal that
    lands during a DDP step's backward stops the run one step later. A step whose loss is not finite
    (on any rank) is skipped (no update, no EMA; the schedule still advances) and counted in
    ``skipped_steps``; more than ``max_nonfinite_skips`` in a row raise ``NonFiniteLossError``.
    """
    model.train()
    window = _Window(device)
    epoch_sums, num_classes = torch.zeros(4, dtype=torch.float64, device=device), None
    skipped = streak = 0
    data_time = 0.0
    steps_per_epoch = first_step + len(loader)
    rank, distributed = current_rank(), is_distributed()
    compile_time, compile_images = 0.0, 0  # steps during which torch.compile compiled: not throughput
    start = t_data = time.perf_counter()
    for step, (images, targets) in enumerate(loader, start=first_step):
        t_step, graphs = time.perf_counter(), _compiled_graphs()
        waited = t_step - t_data
        data_time, window.data = data_time + waited, window.data + waited
        images, targets = to_device(images, targets, device=device, channels_last=channels_last)
        buffers = _snapshot_buffers(model)  # BatchNorm statistics, restored if this step is skipped
        with autocast(device, amp_dtype):
            logits = model(images)
            loss = criterion(logits, targets)
        global_step = epoch * steps_per_epoch + step + 1
        if faults.fault_at("nan_at", global_step, rank):  # tests only (sotakit/faults.py)
            loss = loss * float("nan")
        optimizer.zero_grad(set_to_none=True)
        # The loss is checked before the backward pass, on every rank alike, so none hangs. Under DDP the
        # stop request (a signal, fit's stop_at) is asked here too and shares the check's one all-reduce;
        # it takes effect after this step, as on one process, where it is asked after the step at no cost.
        poll = should_stop is not None and step + 1 < steps_per_epoch
        nonfinite, stop_asked = any_rank(~torch.isfinite(loss.detach()),
                                         poll and distributed and should_stop(step + 1), device=device)
        finite = not nonfinite
        streak = 0 if finite else streak + 1
        if streak > max_nonfinite_skips:
            value = loss.item()  # this rank's loss: finite when another rank's was not
            raise NonFiniteLossError(epoch, step, value if not math.isfinite(value) else float("nan"),
                                     skipped=streak - 1)
        lr = optimizer.param_groups[0]["lr"]
        if finite:
            _backward_and_step(loss, model, optimizer, scaler=scaler, clip_grad_norm=clip_grad_norm)
            if ema is not None:
                update_ema(ema, model, step=step, every=ema_steps, in_warmup=ema_in_warmup)
            sums = batch_sums(loss, logits.detach(), targets)
            epoch_sums += sums
            window.add(sums)
            num_classes = logits.shape[1]
        else:  # no update, no EMA, no metrics, statistics as before
            skipped += 1
            _restore_buffers(model, buffers)
        # The schedule counts steps, skipped ones too, so the run's lr curve does not shift.
        if step_scheduler is not None:
            step_scheduler.step()
        if _compiled_graphs() != graphs:
            compile_time += time.perf_counter() - t_step
            compile_images += len(images)
        faults.after_step(global_step, rank)
        if on_step is not None:
            on_step(step + 1)
        if on_log is not None and (step + 1) % print_freq == 0 and window.n:  # skipped steps log nothing
            now = time.perf_counter()
            on_log(window.record(epoch=epoch, step=step + 1, lr=lr, now=now))
            window.reset(now)
        # The last step of an epoch is never interrupted: the epoch ends (eval, checkpoint) and the
        # caller stops at the epoch boundary, so no resumed epoch is empty.
        if poll and (stop_asked if distributed else should_stop(step + 1)):
            raise Interrupted(step + 1)
        t_data = time.perf_counter()
    elapsed = time.perf_counter() - start
    sums = MetricSums()
    sums.add_sums(epoch_sums, num_classes)
    local_images = sums.sums[3].item()
    out = sums.result(device)  # reduced over ranks: the epoch's metrics of all data
    timed = (local_images - compile_images, elapsed - compile_time) if local_images > compile_images else \
        (local_images, elapsed)  # every step compiled (a tiny epoch): the only figure there is
    out.update(img_s=timed[0] / max(timed[1], 1e-9), data_time=data_time, epoch_time=elapsed,
               skipped_steps=skipped, **({"compile_time": compile_time} if compile_time else {}))
    return out


def _compiled_graphs() -> int:
    """Graphs torch.compile has compiled in this process (0 before it is used): a step during which the
    count grows spent its time compiling. Dynamo's own counter; there is no public one."""
    utils = sys.modules.get("torch._dynamo.utils")
    return utils.counters["stats"]["unique_graphs"] if utils is not None else 0


def _snapshot_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [b.detach().clone() for b in model.buffers()]


def _restore_buffers(model: nn.Module, saved: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for b, s in zip(model.buffers(), saved):
            b.copy_(s)


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
