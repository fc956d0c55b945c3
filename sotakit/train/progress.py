"""Progress display: rich bars in a terminal, plain log lines otherwise (files, CI, pipes)."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RunProgress:
    """Epoch and step bars with loss, lr and img/s; falls back to one line per log interval."""

    def __init__(self, epochs: int, steps_per_epoch: int, *, enabled: bool = True, start_epoch: int = 0):
        self.console = Console(stderr=False)
        self.live = enabled and sys.stdout.isatty()
        self.enabled, self.steps = enabled, steps_per_epoch
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
            self.progress.update(self.step_task, description=f"epoch {epoch + 1}")

    def step(self, done: int) -> None:
        if self.live:
            self.progress.update(self.step_task, completed=done)

    def log_step(self, rec: dict) -> None:
        info = f"loss {rec['loss']:.4f} acc@1 {rec['acc1']:.1f} lr {rec['lr']:.3g} {rec['img_s']:.0f} img/s"
        if self.live:
            self.progress.update(self.step_task, completed=rec["step"], info=info)
        elif self.enabled:
            print(f"{time.strftime('%H:%M:%S')} epoch {rec['epoch'] + 1} step {rec['step']}/{self.steps} "
                  f"{info}", flush=True)

    def end_epoch(self, line: str) -> None:
        if self.live:
            self.progress.advance(self.epoch_task)
            self.progress.console.print(line)
        elif self.enabled:
            print(line, flush=True)

    def message(self, line: str) -> None:
        if self.enabled:
            (self.progress.console.print if self.live else print)(line)

    def close(self) -> None:
        if self.live:
            self.progress.stop()
