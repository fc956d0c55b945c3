"""Helpers for a training loop you write yourself (pytorch-nn-tools' idea: helpers around your loop,
no trainer with callbacks).

Each is a small object with explicit arguments that your loop calls: ``MetricAggregator`` (running means
of named metrics over an epoch), ``MetricLogger`` (metrics.jsonl plus TensorBoard), ``Checkpoints``
(the last state for resume, plus the best one when ``save_if`` says so, e.g. ``improved("val.acc1")``;
written atomically and verified, loaded ``weights_only``) and ``ProgressBars`` (epoch and step bars on a
terminal, a line per epoch elsewhere, nothing with ``enabled=False``). ``examples/own_loop.py`` uses them all.
Unlike pytorch-nn-tools, nothing mutates the dict you pass in, and the "new best" history survives resume.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from .checkpoint import copy_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .rundir import MetricsLog


def _number(v: Any) -> float:
    return v.detach().item() if isinstance(v, torch.Tensor) else float(v)


def prefixed(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """``{"loss": t}`` -> ``{"train.loss": float}`` (pytorch-nn-tools' ``mod_name_train``)."""
    return {f"{prefix}.{k}": _number(v) for k, v in metrics.items()}


class MetricAggregator:
    """Running means of named metrics, weighted by ``n`` (e.g. the batch size) when given."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def __call__(self, metrics: dict[str, Any], n: float = 1) -> dict[str, Any]:
        """Add one batch's metrics; returns them unchanged, so calls chain."""
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + _number(v) * n
            self.counts[k] = self.counts.get(k, 0.0) + n
        return metrics

    def aggregate(self) -> dict[str, float]:
        """The mean of every metric added since the last ``reset``."""
        return {k: self.sums[k] / self.counts[k] for k in self.sums}


class MetricLogger:
    """Appends ``{"kind", "step", **metrics}`` lines to ``folder/metrics.jsonl`` and the scalars to
    TensorBoard (when installed) as ``kind/name``; a context manager that closes on exit."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._log = MetricsLog(self.folder)

    def __call__(self, metrics: dict[str, Any], *, step: int, kind: str = "epoch") -> dict[str, Any]:
        self._log.write({"kind": kind, "step": step, **{k: _number(v) for k, v in metrics.items()}},
                        global_step=step)
        return metrics

    def close(self) -> None:
        self._log.close()

    def __enter__(self) -> "MetricLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class improved:  # noqa: N801 - used as a condition: save_if=improved("val.acc1")
    """True when ``metrics[name]`` beats every earlier value (higher for mode "max", lower for "min")."""

    def __init__(self, name: str, mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"improved(mode=...) takes 'max' or 'min', got {mode!r}")
        self.name, self.mode = name, mode
        self.best: float | None = None

    def __call__(self, metrics: dict[str, Any]) -> bool:
        if self.name not in metrics:
            raise KeyError(f"improved({self.name!r}): no such metric among {sorted(metrics)}")
        v = _number(metrics[self.name])
        better = self.best is None or (v > self.best if self.mode == "max" else v < self.best)
        if better and math.isfinite(v):
            self.best = v
            return True
        return False

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]


class Checkpoints:
    """``folder/last.pt`` after every epoch (what ``load_last`` resumes), ``folder/best.pt`` when
    ``save_if(metrics)`` is true. Objects are passed by name (``model=..., optimizer=...``); each needs
    ``state_dict``/``load_state_dict``. The RNG states go along: a resumed loop draws what it would have."""

    def __init__(self, folder: str | Path, *, save_if: Callable[[dict], bool] | None = None):
        self.folder, self.save_if = Path(folder), save_if
        self.last, self.best = self.folder / "last.pt", self.folder / "best.pt"

    def save(self, epoch: int, metrics: dict[str, Any] | None = None, **objects) -> bool:
        """Save after epoch ``epoch`` (from 0); returns whether it was also saved as the best."""
        is_best = bool(self.save_if is not None and metrics is not None and self.save_if(metrics))
        state = {"epoch": epoch, "metrics": {k: _number(v) for k, v in (metrics or {}).items()},
                 "rng": rng_state(), "objects": {k: o.state_dict() for k, o in objects.items()},
                 "save_if": self.save_if.state_dict() if hasattr(self.save_if, "state_dict") else None}
        save_checkpoint(state, self.last)
        if is_best:
            copy_checkpoint(self.last, self.best)
        return is_best

    def load_last(self, **objects) -> int:
        """Restore the objects, RNGs and ``save_if``'s history from last.pt; the epoch to start at (0: none).
        """
        if not self.last.exists():
            return 0
        state = load_checkpoint(self.last)
        missing = sorted(set(objects) - set(state["objects"]))
        if missing:
            raise KeyError(f"{self.last} holds no state for {missing}; it has {sorted(state['objects'])}")
        for k, o in objects.items():
            o.load_state_dict(state["objects"][k])
        if state["save_if"] is not None and hasattr(self.save_if, "load_state_dict"):
            self.save_if.load_state_dict(state["save_if"])
        set_rng_state(state["rng"])
        return state["epoch"] + 1


class ProgressBars:
    """Two-level progress for any loop: ``for e in bars.epochs(range(n))``, ``for b in bars.steps(loader)``.

    A rich bar pair on a terminal; elsewhere (logs, CI) one line per epoch with its ``comment``; nothing at
    all with ``enabled=False`` (fastai #3959, fastprogress #105: bars that could not be silenced).
    """

    def __init__(self, enabled: bool = True, live: bool | None = None):
        self.enabled = enabled
        self.live = enabled and (sys.stdout.isatty() if live is None else live)
        self.progress = self.epoch_task = None
        self.text, self.epoch = "", None

    def epochs(self, it: Iterable[int]) -> Iterable[int]:
        items = list(it)
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeElapsedColumn())
            self.progress.start()
            self.epoch_task = self.progress.add_task("epochs", total=len(items), info="")
        try:
            for self.epoch in items:
                yield self.epoch
                if self.live:
                    self.progress.update(self.epoch_task, advance=1, info=self.text)
                elif self.enabled:
                    print(f"epoch {self.epoch}: {self.text}".rstrip(": "), flush=True)
        finally:
            if self.live:
                self.progress.stop()

    def steps(self, it: Iterable, total: int | None = None) -> Iterable:
        total = total if total is not None else (len(it) if hasattr(it, "__len__") else None)
        if not self.live:
            yield from it
            return
        task = self.progress.add_task(f"epoch {self.epoch}", total=total, info="")
        for item in it:
            yield item
            self.progress.advance(task)
        self.progress.remove_task(task)

    def comment(self, text: str) -> None:
        """The text shown beside the epoch bar (and in the epoch's line without a terminal)."""
        self.text = text
