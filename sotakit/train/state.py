"""What a checkpoint holds, and the saver a loop calls (fit's, or one a user writes).

Everything a resume restores is named once: ``parts`` (model, optimizer, scheduler, EMA, scaler;
litgpt's ``state`` dict) and ``RunTotals`` (position and totals over all sessions of a run).
``training_state`` turns them into the checkpoint dict, ``restore_state`` the other way round, and
``CheckpointSaver`` writes it at epoch ends, every ``--checkpoint-every`` and on a stop
(pytorch-nn-tools' ``CheckpointSaver``, used inside the loop rather than as a callback). The keys are
those of every earlier sotakit checkpoint, so old runs resume (tests/train/test_state.py pins them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..data import image_channels
from .checkpoint import LAST, copy_checkpoint, rng_state, save_checkpoint, set_rng_state
from .distributed import DistInfo, all_ranks

BEST = "checkpoint-best.pt"


@dataclass
class RunTotals:
    """Position and totals over all sessions of a run (the checkpoint's non-tensor part).

    ``epoch``/``step`` say where this session starts; ``started`` is this session's start
    (perf_counter), ``wall_before`` the wall time of earlier sessions.
    """

    epoch: int = 0
    step: int = 0
    best_acc1: float = -1.0
    train_time: float = 0.0
    img_rates: list[float] = field(default_factory=list)
    wall_before: float = 0.0
    skipped_steps: int = 0
    started: float = field(default_factory=time.perf_counter)
    epoch_started: float | None = None
    pending_eval: dict | None = None  # an epoch trained, its evaluation stopped (fit's close_epoch)

    def start_epoch(self) -> None:
        self.epoch_started = time.perf_counter()

    def trained(self) -> float:
        """Training seconds so far, including the part of the current epoch."""
        running = time.perf_counter() - self.epoch_started if self.epoch_started is not None else 0.0
        return self.train_time + running

    def stop_epoch(self) -> None:
        """An epoch stopped part-way: count the part that was trained."""
        self.train_time, self.epoch_started = self.trained(), None

    def end_epoch(self, stats: dict, *, world_size: int) -> None:
        """An epoch ended: its time (as the loop measured it), throughput and skipped steps."""
        self.train_time += stats["epoch_time"]
        self.img_rates.append(stats["img_s"] * world_size)
        self.skipped_steps += stats["skipped_steps"]
        self.step, self.epoch_started = 0, None

    def update_best(self, rec: dict) -> bool:
        """Record the epoch's best acc@1 (plain or EMA model); True when it is a new best."""
        acc = max(rec["val_acc1"], rec.get("ema_acc1", -1.0))
        is_best, self.best_acc1 = acc > self.best_acc1, max(self.best_acc1, acc)
        return is_best

    def wall_time(self) -> float:
        return time.perf_counter() - self.started + self.wall_before


def training_state(parts: dict[str, Any], totals: RunTotals, *, epoch: int, step: int, rngs: list,
                   meta: dict, pending: dict | None = None) -> dict:
    """The checkpoint after ``step`` steps of ``epoch``: tensors and plain types only."""
    def sd(name):
        return parts[name].state_dict() if parts.get(name) is not None else None
    return {"model": sd("model"), "optimizer": sd("optimizer"), "scheduler": sd("scheduler"),
            "ema": sd("ema"), "scaler": sd("scaler"), "epoch": epoch, "step_in_epoch": step,
            "best_acc1": totals.best_acc1, "train_time": totals.trained(),
            "img_rates": list(totals.img_rates), "wall_time": totals.wall_time(), "rng": rngs,
            "skipped_steps": totals.skipped_steps, **meta,
            **({"pending_eval": _plain(pending)} if pending is not None else {})}


def _plain(obj):
    """Numbers (0-d tensors too), strings and nested dicts as plain Python types: weights_only-safe."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        return obj.item()
    return obj


def run_meta(recipe, *, bundle, fingerprint: str, recipe_hash: str) -> dict:
    """What a checkpoint says about its inputs: the resolved recipe, data fingerprint and classes, and
    the native size and normalization (what a later evaluation or prediction rebuilds)."""
    return {"recipe": recipe.to_dict(), "recipe_hash": recipe_hash, "data_fingerprint": fingerprint,
            "classes": list(bundle.classes), "native_size": bundle.native_size, "mean": list(bundle.mean),
            "std": list(bundle.std), "channels": image_channels(bundle)}


def restore_state(ckpt: dict | None, parts: dict[str, Any], *, rank: int = 0, load_all: bool = True,
                  start_epoch: int = 0, started: float | None = None, say: Callable[[str], None] = print,
                  where: str = "") -> RunTotals:
    """Load ``ckpt`` into ``parts`` and return the run's totals; fresh totals without a checkpoint.

    ``load_all=False`` (a forced resume onto another model or class list) loads only the weights
    whose name and shape match, and training starts afresh. ``started``: when this session began
    (perf_counter; default now), for the run's wall time.
    """
    started = time.perf_counter() if started is None else started
    totals = RunTotals(epoch=start_epoch, started=started)
    if ckpt is None:
        return totals
    model, ema = parts["model"], parts.get("ema")
    if not load_all:
        load_matching(model, ckpt["model"])
        if ema is not None and ckpt.get("ema") is not None:
            load_matching(ema, ckpt["ema"])
        say(f"forced resume of {where}: matching weights loaded; optimizer, schedule and position start "
            "afresh")
        return totals
    for name in ("model", "optimizer", "scheduler"):  # always there: an exact resume needs each
        parts[name].load_state_dict(ckpt[name])
    for name in ("ema", "scaler"):  # as the run was built (an EMA added on a forced resume starts afresh)
        if parts.get(name) is not None and ckpt.get(name) is not None:
            parts[name].load_state_dict(ckpt[name])
    totals = RunTotals(epoch=ckpt["epoch"], step=ckpt["step_in_epoch"], best_acc1=ckpt["best_acc1"],
                       train_time=ckpt["train_time"], img_rates=list(ckpt["img_rates"]),
                       wall_before=ckpt["wall_time"], skipped_steps=ckpt.get("skipped_steps", 0),
                       started=started, pending_eval=ckpt.get("pending_eval"))
    set_rng_state(ckpt["rng"][min(rank, len(ckpt["rng"]) - 1)])  # rank r resumes with its own stream
    say(f"resuming {where} at epoch {totals.epoch + 1}, step {totals.step}")
    return totals


def load_matching(module: nn.Module, saved: dict) -> None:
    """Load the tensors of ``saved`` whose name and shape match ``module``'s; leave the rest as built."""
    own = module.state_dict()
    module.load_state_dict({k: v for k, v in saved.items() if k in own and own[k].shape == v.shape},
                           strict=False)


def gather_rng(dist_info: DistInfo) -> list:
    """RNG states of every rank (rank r resumes with its own stream)."""
    mine = rng_state()
    if not dist_info.enabled:
        return [mine]
    out = [None] * dist_info.world_size
    torch.distributed.all_gather_object(out, mine)
    return out


class CheckpointSaver:
    """``checkpoint-last.pt`` (the previous one kept) at epoch ends, every N steps or S seconds, on a stop.

    ``save`` and ``maybe_save`` are collectives under DDP: every rank calls them, rank 0 writes.
    ``every_steps`` counts global steps (epoch * steps_per_epoch + step); with ``every_s`` any rank's
    clock decides for all (clocks differ between ranks).
    """

    def __init__(self, run_dir: Path | None, *, meta: dict, steps_per_epoch: int, every_steps: int = 0,
                 every_s: float = 0.0, dist_info: DistInfo | None = None, device: torch.device | str = "cpu"):
        self.run_dir, self.meta, self.steps_per_epoch = run_dir, meta, steps_per_epoch
        self.every_steps, self.every_s, self.device = every_steps, every_s, device
        self.dist_info = dist_info or DistInfo()
        self.last_save = time.perf_counter()
        self.held_rngs = None

    def hold_rng(self) -> None:
        """Keep the RNG states of now (an epoch trained, its evaluation to come) for a ``pending`` save."""
        self.held_rngs = gather_rng(self.dist_info)

    def save(self, parts: dict[str, Any], totals: RunTotals, *, epoch: int, step: int,
             best: bool = False, pending: dict | None = None) -> None:
        """Save the state after ``step`` steps of ``epoch``; ``best`` also copies it to checkpoint-best.pt.

        ``pending``: the evaluation of the epoch just trained was interrupted; the checkpoint holds what
        it needs (epoch, lr, training statistics) and the RNG states ``hold_rng`` kept before it."""
        rngs = self.held_rngs if pending is not None and self.held_rngs else gather_rng(self.dist_info)
        if self.dist_info.is_main and self.run_dir is not None:
            state = training_state(parts, totals, epoch=epoch, step=step, rngs=rngs, meta=self.meta,
                                   pending=pending)
            save_checkpoint(state, Path(self.run_dir) / LAST, keep_previous=True,
                            meta={"epoch": epoch, "step": step})
            if best:
                copy_checkpoint(Path(self.run_dir) / LAST, Path(self.run_dir) / BEST)
        self.last_save = time.perf_counter()

    def maybe_save(self, parts: dict[str, Any], totals: RunTotals, *, epoch: int, step: int) -> bool:
        """--checkpoint-every: a mid-epoch save when one is due (the epoch's end saves anyway)."""
        if step >= self.steps_per_epoch or not (self.every_steps or self.every_s):
            return False
        due = bool(self.every_steps) and (epoch * self.steps_per_epoch + step) % self.every_steps == 0
        if self.every_s:
            due = all_ranks(due or time.perf_counter() - self.last_save >= self.every_s, self.device,
                            op="max")
        if due:
            self.save(parts, totals, epoch=epoch, step=step)
        return due
