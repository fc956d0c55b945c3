"""fastai's learning-rate range test, as a function for any loop, that leaves no trace.

Follows fastai's ``Learner.lr_find`` (callback/schedule.py): an exponential ramp
``lr = start * (end/start) ** (i/num_it)`` over ``num_it`` batches (the first at exactly
``start``), the loss smoothed as fastai's Recorder does (EMA, beta 0.98, debiased like Adam), a stop
once the smoothed loss exceeds 4x its best, and the suggestions computed on the points after the
first 10% and before the last 5, cut at the first non-finite loss (fastai PR #3477).

What users of fastai and pytorch-lr-finder hit, fixed here: the model, the optimizer (state and lr),
BatchNorm statistics, the GradScaler and every RNG (torch, CUDA, numpy, python, the loader's
generator) come back exactly, so training after the finder equals training without it
(pytorch-lr-finder #11); too few points give a message instead of an IndexError (fastai #3658); a
DDP-wrapped model is refused, because an early stop on one rank deadlocks the others (fastai #3688,
v1 PR #2487): ``shared_lr_find`` runs it on rank 0 and broadcasts the result.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..evaluate import autocast, to_device
from .checkpoint import rng_state, set_rng_state
from .loop import _backward_and_step

SUGGESTIONS = ("valley", "slide", "minimum", "steep")
SLIDE_SPAN = 15  # fastai's slide(lr_diff=15)


class LRFindError(ValueError):
    """The range test cannot give a suggestion (too few points, a DDP model); the message says why."""


@dataclass
class LRFindResult:
    """Every batch's lr, raw and smoothed loss, and the suggestions (valley is fastai's default)."""

    lrs: list[float]
    losses: list[float]  # smoothed, as fastai plots them
    raw_losses: list[float]
    suggestions: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False

    @property
    def valley(self) -> float:
        return self.suggestions["valley"]

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line: the suggestions, valley first."""
        parts = ", ".join(f"{k} {v:.3g}" for k, v in self.suggestions.items())
        return f"lr-find over {len(self.lrs)} steps ({self.lrs[0]:.2g} to {self.lrs[-1]:.2g}): {parts}"


@dataclass
class _Snapshot:
    model: dict
    training: bool
    optimizer: dict
    scaler: dict | None
    rng: dict
    generators: list


def _loader_generators(loader) -> list[torch.Generator]:
    gens = [getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)]
    return [g for g in gens if isinstance(g, torch.Generator)]


def _snapshot(model, optimizer, scaler, loader) -> _Snapshot:
    return _Snapshot(copy.deepcopy(model.state_dict()), model.training, copy.deepcopy(optimizer.state_dict()),
                     copy.deepcopy(scaler.state_dict()) if scaler is not None else None, rng_state(),
                     [(g, g.get_state()) for g in _loader_generators(loader)])


def _restore(snap: _Snapshot, model, optimizer, scaler) -> None:
    optimizer.zero_grad(set_to_none=True)
    model.load_state_dict(snap.model)  # parameters and buffers (BatchNorm statistics)
    model.train(snap.training)
    optimizer.load_state_dict(snap.optimizer)  # moments and each group's lr
    if scaler is not None:
        scaler.load_state_dict(snap.scaler)
    set_rng_state(snap.rng)
    for g, state in snap.generators:
        g.set_state(state)


def _batches(loader):
    """The loader's batches, starting over when it runs out (fastai fits more epochs)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise LRFindError("lr_find: the loader gave no batches")


def lr_find(model: nn.Module, loader, optimizer: torch.optim.Optimizer, *, criterion: nn.Module,
            device: torch.device | str = "cpu", start_lr: float = 1e-7, end_lr: float = 10.0,
            num_it: int = 100, stop_div: bool = True, beta: float = 0.98,
            amp_dtype: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None,
            clip_grad_norm: float | None = None, channels_last: bool = False) -> LRFindResult:
    """Train ``num_it`` batches on an exponential lr ramp, then put everything back as it was.

    Works in any loop: the objects are yours, and the range test uses them as your loop would
    (autocast with ``amp_dtype``, ``scaler`` for float16, ``clip_grad_norm``). Call it before you build
    your scheduler (torch's schedulers record the lr they start from). Every param group gets the same lr.

    Raises:
        LRFindError: for a DDP-wrapped model (use ``shared_lr_find``), a bad range, or too few points.
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        raise LRFindError("lr_find runs on one process: pass the model before DistributedDataParallel wraps "
                          "it, on one rank (shared_lr_find), or run `sotakit lr-find` without torchrun")
    if not 0 < start_lr < end_lr:
        raise LRFindError(f"lr_find needs 0 < start < end, got start {start_lr:g}, end {end_lr:g}")
    num_it = max(num_it, 6)  # fastai's minimum
    device = torch.device(device)
    snap = _snapshot(model, optimizer, scaler, loader)
    lrs, raw, smooth = [], [], []
    avg, best, stopped = 0.0, math.inf, False
    try:
        model.train()
        for i, (images, targets) in zip(range(num_it), _batches(loader)):
            lr = start_lr * (end_lr / start_lr) ** (i / num_it)
            for g in optimizer.param_groups:
                g["lr"] = lr
            images, targets = to_device(images, targets, device=device, channels_last=channels_last)
            with autocast(device, amp_dtype):
                loss = criterion(model(images), targets)
            value = loss.item()
            lrs.append(lr)
            raw.append(value)
            if not math.isfinite(value):  # never stepped with; the series ends here
                smooth.append(float("nan"))
                stopped = True
                break
            avg = beta * avg + (1 - beta) * value
            smooth.append(avg / (1 - beta ** (i + 1)))
            optimizer.zero_grad(set_to_none=True)
            _backward_and_step(loss, model, optimizer, scaler=scaler, clip_grad_norm=clip_grad_norm)
            best = min(best, smooth[-1])
            if stop_div and smooth[-1] > 4 * best:
                stopped = True
                break
    finally:
        _restore(snap, model, optimizer, scaler)
    return LRFindResult(lrs, smooth, raw, suggest(lrs, smooth, num_it), stopped)


def trimmed(lrs: list[float], losses: list[float], num_it: int) -> tuple[np.ndarray, np.ndarray]:
    """fastai's ``lrs[num_it//10:-5]``, cut at the first non-finite loss."""
    lr, loss = np.asarray(lrs[num_it // 10:-5], float), np.asarray(losses[num_it // 10:-5], float)
    bad = np.flatnonzero(~np.isfinite(loss))
    end = bad[0] if len(bad) else len(loss)
    return lr[:end], loss[:end]


def suggest(lrs: list[float], losses: list[float], num_it: int) -> dict[str, float]:
    """valley, slide, minimum and steep (fastai's four) on the trimmed series."""
    lr, loss = trimmed(lrs, losses, num_it)
    if len(lr) < 3:
        raise LRFindError(f"lr_find recorded only {len(lr)} usable points after trimming (of {len(lrs)} "
                          "steps): the loss diverged almost at once; use a smaller --end, a smaller --start "
                          "or more --steps")
    out = {"valley": valley(lr, loss), "slide": slide(lr, loss), "minimum": minimum(lr, loss),
           "steep": steep(lr, loss)}
    if len(lr) <= SLIDE_SPAN:  # slide compares gradients 15 points apart: undefined on a shorter series
        del out["slide"]
    return out


def valley(lr: np.ndarray, loss: np.ndarray) -> float:
    """Halfway into the longest strictly decreasing run of points (1/3 + 1/6 of its length)."""
    n = len(loss)
    lds = np.ones(n, int)  # lds[i]: the longest decreasing subsequence ending at i (fastai's O(n^2) DP)
    for i in range(1, n):
        earlier = lds[:i][loss[:i] > loss[i]]
        if len(earlier):
            lds[i] = earlier.max() + 1
    max_end = int(np.argmax(lds))  # the first index reaching the longest length
    max_start = max_end - int(lds[max_end])
    sections = (max_end - max_start) / 3
    return float(lr[max_start + int(sections) + int(sections / 2)])


def slide(lr: np.ndarray, loss: np.ndarray, lr_diff: int = 15, thresh: float = 0.005,
          adjust_value: float = 1.0) -> float:
    """fastai's slide: walk left from the end until the loss gradient 15 points apart stops changing."""
    grad = np.gradient(loss)
    r, left = -1, -1 - min(lr_diff, len(loss) - 1)
    found = lr[left]
    while left >= -len(loss) and abs(grad[r] - grad[left]) > thresh:
        found = lr[left]
        r, left = r - 1, left - 1
    return float(found * adjust_value)


def minimum(lr: np.ndarray, loss: np.ndarray) -> float:
    """A tenth of the lr at the lowest loss."""
    return float(lr[int(np.argmin(loss))] / 10)


def steep(lr: np.ndarray, loss: np.ndarray) -> float:
    """The lr of the steepest descent per log-lr."""
    grads = np.diff(loss) / np.diff(np.log(lr))
    return float(lr[int(np.argmin(grads))])


def shared_lr_find(model: nn.Module, loader, optimizer, **kw) -> LRFindResult:
    """``lr_find`` on rank 0 of a process group, its result broadcast to every rank (one process: lr_find).

    Call it with the model before DistributedDataParallel wraps it; the other ranks wait in the broadcast
    (the process group's timeout bounds the wait).
    """
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return lr_find(model, loader, optimizer, **kw)
    box: list = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = lr_find(model, loader, optimizer, **kw).to_dict()
        except LRFindError as e:
            box[0] = {"error": str(e)}
    dist.broadcast_object_list(box, src=0)
    if "error" in box[0]:
        raise LRFindError(box[0]["error"])
    return LRFindResult(**box[0])


def write_lr_find(result: LRFindResult, folder: str | Path) -> tuple[Path, Path]:
    """lr_find.json (every point and the suggestions) and lr_find.png (loss against log lr, marked)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    js = folder / "lr_find.json"
    js.write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4))
    end = max(1, len(result.lrs) - 5)  # fastai's plot skips the last 5 points
    ax.plot(result.lrs[:end], result.losses[:end])
    for (name, lr), marker in zip(result.suggestions.items(), "o^sv"):
        y = float(np.interp(np.log(lr), np.log(result.lrs[:end]), result.losses[:end]))
        ax.plot([lr], [y], marker, label=f"{name} {lr:.2g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed loss", title="lr-find")
    ax.legend()
    png = folder / "lr_find.png"
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return js, png
