"""Progress display: rich bars in a terminal, plain log lines otherwise (files, CI, pipes)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

WARMUP_STEPS = 2  # the first steps of a session (allocation, worker start-up) are not timed
TIMED_STEPS = 10  # the estimate is printed after this many timed steps...
TIMED_S = 20.0  # ...or this many seconds of them, whichever comes first


def duration_text(seconds: float) -> str:
    """3h10m, 12m05s, 40s: the precision an estimate has."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def eta_line(*, steps_left: int, rate: float, epochs: int, first: int, last: int) -> str:
    """The estimate printed once a session's first steps are timed."""
    return (f"about {duration_text(steps_left / rate)} left for {epochs} epochs at {rate:.1f} steps/s "
            f"(measured over steps {first}-{last}; evaluation not included)")


class StepTimer:
    """Times a session's first steps after ``WARMUP_STEPS`` warm-up steps; ``rate()`` once enough are in."""

    def __init__(self):
        self.t0 = self.first = self.last = None
        self.t_last = 0.0

    def step(self, done: int, now: float) -> None:
        """``done`` steps of the current epoch are done (called after every step)."""
        if self.first is None:
            self.first = done + WARMUP_STEPS + 1  # steps first..last are timed (1-based in the epoch)
        if done == self.first - 1:
            self.t0 = now
        elif self.t0 is not None and done >= self.first:
            self.last, self.t_last = done, now

    def ready(self) -> bool:
        return self.last is not None and (self.last - self.first + 1 >= TIMED_STEPS
                                          or self.t_last - self.t0 >= TIMED_S)

    def rate(self) -> float | None:
        """Steps per second over the timed steps (None before the first one)."""
        if self.last is None or self.t_last <= self.t0:
            return None
        return (self.last - self.first + 1) / (self.t_last - self.t0)


class RunProgress:
    """Epoch and step bars with loss, lr and img/s; falls back to one line per log interval.

    After the first timed steps of the session it prints once how long the rest of the run should take.
    Everything goes to stderr (progress, not results), so stdout holds only the run's results.
    """

    def __init__(self, epochs: int, steps_per_epoch: int, *, enabled: bool = True, start_epoch: int = 0):
        self.console = Console(stderr=True)
        self.live = enabled and sys.stderr.isatty()
        self.enabled, self.steps, self.epochs = enabled, steps_per_epoch, epochs
        self.epoch, self.timer, self.eta = start_epoch, StepTimer(), None
        self.progress = None
        if self.live:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                     TimeRemainingColumn(), console=self.console)
            self.progress.start()
            self.epoch_task = self.progress.add_task("epochs", total=epochs, completed=start_epoch, info="")
            self.step_task = self.progress.add_task("steps ", total=steps_per_epoch, info="")

    def start_epoch(self, epoch: int, first_step: int = 0) -> None:
        if self.live:
            self.progress.reset(self.step_task, total=self.steps, completed=first_step)
            self.progress.update(self.step_task, description=f"epoch {epoch + 1}/{self.epochs}")
        self.epoch = epoch
        if self.timer.first is None:
            self.timer.step(first_step, time.perf_counter())

    def step(self, done: int) -> None:
        if self.live:
            self.progress.update(self.step_task, completed=done)
        if self.eta is None and self.timer.first is not None:
            self.timer.step(done, time.perf_counter())
            if self.timer.ready():
                self.print_eta(done)

    def print_eta(self, done: int) -> None:
        """The estimate for the rest of the run, from the steps timed so far (once per session)."""
        rate = self.timer.rate()
        if rate is None:
            return
        steps_left = (self.epochs - self.epoch) * self.steps - done
        self.eta = eta_line(steps_left=steps_left, rate=rate, epochs=self.epochs, first=self.timer.first,
                            last=self.timer.last)
        self.message(self.eta)

    def log_step(self, rec: dict) -> None:
        info = f"loss {rec['loss']:.4f} acc@1 {rec['acc1']:.1f} lr {rec['lr']:.3g} {rec['img_s']:.0f} img/s"
        if self.live:
            self.progress.update(self.step_task, completed=rec["step"], info=info)
        elif self.enabled:
            print(f"{time.strftime('%H:%M:%S')} epoch {rec['epoch'] + 1}/{self.epochs} "
                  f"step {rec['step']}/{self.steps} {info}", file=sys.stderr, flush=True)

    def end_epoch(self, line: str) -> None:
        if self.eta is None and self.timer.last is not None:  # an epoch shorter than the timed steps
            self.print_eta(self.steps)
        if self.live:
            self.progress.advance(self.epoch_task)
            self.progress.console.print(line)
        elif self.enabled:
            print(line, file=sys.stderr, flush=True)

    def message(self, line: str) -> None:
        if self.enabled:
            if self.live:
                self.progress.console.print(line)
            else:
                print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.live:
            self.progress.stop()


log = logging.getLogger("sotakit")
PLAIN_EVERY_S = 10.0  # plain mode: a line at most this often (and at every 10%), never per item


def say_for(enabled: bool) -> Callable[[str], None]:
    """fit()'s ``say``: each message to the "sotakit" logger (warning when it starts with "warning", else
    info) when a handler is attached to that logger (the CLI's: stderr); otherwise (fit() called from
    Python) it is printed as before, so ``fit(verbose=True)`` still shows its notes. Nothing when not
    ``enabled``."""
    def say(msg: str, *_, **__) -> None:
        if not enabled:
            return
        if not log.handlers:
            print(msg, file=sys.stderr, flush=True)
            return
        log.log(logging.WARNING if str(msg).startswith("warning") else logging.INFO, msg)
    return say


def _amount(n: float, unit: str) -> str:
    if unit != "bytes":
        return f"{n:.0f}"
    for scale, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= scale:
            return f"{n / scale:.1f} {name}"
    return f"{n:.0f} B"


class TaskProgress:
    """A ``progress(done, total)`` callback (the protocol data/ and evaluate/ functions take) for one kind
    of long work: a rich bar on a terminal, else a plain line on the "sotakit.progress" logger every
    ``PLAIN_EVERY_S`` seconds or 10%, and one at the end (``min_s``: not for work that took less).

    Silent unless that logger is enabled for info (the CLI without ``-q``), so library calls print nothing.
    A call with ``done`` not above the previous one starts the next task of the same kind (each epoch's
    evaluation). ``total`` may be None (a download without a size).
    """

    def __init__(self, label: str, *, unit: str = "items", min_s: float = 0.0, rate: bool = True):
        self.label, self.unit, self.min_s, self.show_rate = label, unit, min_s, rate
        self.log = logging.getLogger("sotakit.progress")
        self.bar = self.task = None
        self.last_done = None

    def __call__(self, done: int, total: int | None) -> None:
        if not self.log.isEnabledFor(logging.INFO):
            return
        now = time.monotonic()
        if self.last_done is None or done <= self.last_done:
            self._start(now, total)
        self.last_done = done
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total)
            if total is not None and done >= total:
                self.close()
            return
        finished = total is not None and done >= total
        decile = int(10 * done / total) if total else 0
        if finished:
            if now - self.t0 >= self.min_s:
                self.log.info(self.line(done, total, now))
        elif now - self.t_line >= PLAIN_EVERY_S or (decile > self.decile and now - self.t_line >= 1.0):
            self.log.info(self.line(done, total, now))
            self.t_line, self.decile = now, decile

    def _start(self, now: float, total: int | None) -> None:
        self.close()
        self.t0 = self.t_line = now
        self.decile = 0
        if sys.stderr.isatty():
            self.bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                                transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total)

    def line(self, done: int, total: int | None, now: float) -> str:
        """``indexing photos/train: files 500/1000 (50%), 410 files/s, 1s elapsed, ETA 1s``."""
        elapsed = now - self.t0
        rate = done / elapsed if elapsed > 0 else None
        text = f"{self.label}: {'' if self.unit == 'bytes' else self.unit + ' '}{_amount(done, self.unit)}"
        if total:
            text += f"/{_amount(total, self.unit)} ({100 * done / total:.0f}%)"
        if self.show_rate and rate:
            text += f", {_amount(rate, self.unit)}{'/s' if self.unit == 'bytes' else f' {self.unit}/s'}"
        text += f", {duration_text(elapsed)} elapsed"
        if total and rate and done < total:
            text += f", ETA {duration_text((total - done) / rate)}"
        return text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = self.task = None


def task_progress(label: str, unit: str = "items") -> TaskProgress:
    """The factory ``load_data(progress=...)`` takes: one reporter per labelled task."""
    return TaskProgress(label, unit=unit)
