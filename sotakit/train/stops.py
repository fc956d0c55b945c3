"""The two things that end a run early: a stop request (a signal, or ``stop_at``) and a failure.

A stop is polled at step boundaries and all-reduced, so every rank stops at the same step and
writes one checkpoint together. A failure is translated into an error that says what to do and
names the last good checkpoint; under DDP the peers on this host are killed, since they would
otherwise wait in a collective until the timeout.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from ..data import kill_loader_workers
from .checkpoint import LAST, PREV, CheckpointError
from .distributed import DistInfo, barrier, kill_local_peers
from .loop import Interrupted, NonFiniteLossError


class RunError(RuntimeError):
    """A run failed in a way the user can act on; the message names the last good checkpoint."""


class StopRequest:
    """Turns SIGTERM/SIGINT/SIGUSR1/SIGHUP into a stop honoured wherever the run is.

    SIGUSR1 is what SLURM sends ahead of a time limit (``--signal``); SIGHUP what a closed ssh session
    sends (left ignored under nohup); both are treated as SIGTERM. ``install()`` arms it from the start of
    fit(): until training begins (``training()``) a signal stops at once, there being nothing to save;
    from then on it is a flag polled after every training step and every evaluation batch. (Raising from
    the handler instead would land anywhere, e.g. inside a logging call that then prints its own traceback.)
    A second Ctrl-C exits at once (the last checkpoint is kept; the current step is lost).
    ``stop_at=(epoch, steps)`` stops as a signal would once ``steps`` steps of ``epoch`` are done.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP)

    def __init__(self, *, stop_at: tuple[int, int] | None = None):
        self.signum, self.stop_at = None, tuple(stop_at) if stop_at is not None else None
        self._old = {}
        self.immediate = False

    def install(self, *, immediate: bool = True) -> "StopRequest":
        """Take the signals (once); ``immediate``: a signal raises Interrupted at once (before training)."""
        self.immediate = immediate
        for s in self.SIGNALS:
            if s in self._old:
                continue
            try:
                if s == signal.SIGHUP and signal.getsignal(s) == signal.SIG_IGN:
                    continue  # nohup: the user asked to survive a hang-up
                old = signal.signal(s, self._handle)
                owner = getattr(old, "__self__", None)
                if isinstance(owner, StopRequest):  # one a failed fit() left: restore what it replaced
                    old = owner._old.get(s, signal.SIG_DFL)
                self._old[s] = old
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __enter__(self) -> "StopRequest":
        return self.install(immediate=False)

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signum is not None:
            sys.stderr.write("\nsecond Ctrl-C: exiting at once (the last checkpoint is kept)\n")
            sys.stderr.flush()
            os._exit(128 + signal.SIGINT)
        self.signum = signum
        if self.immediate:  # nothing trained yet, nothing to save: stop now (the data load may take minutes)
            sys.stderr.write(f"stopped ({signal_name(signum)}) before training began: nothing was trained, "
                             "no checkpoint to keep\n")
            sys.stderr.flush()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # what Python does by default: fit() inside a notebook survives it
            os._exit(128 + signal.SIGTERM)  # what the default action would do, with a message and our code

    @contextmanager
    def training(self):
        """From here a signal is a flag, polled at step and evaluation-batch boundaries. The handlers stay
        after a clean exit (the final evaluation follows) and are restored when the loop ends early."""
        self.install(immediate=False)
        try:
            yield self
        except BaseException:
            self.restore()
            raise

    @contextmanager
    def final_evaluation(self, run_dir: Path | None, *, progress, enabled: bool = True):
        """Around the final evaluation and the summary: a stop there ends the run as interrupted, a file that
        cannot be written (full disk) as failed (failed.json), run.pid dropped in both cases."""
        from ..evaluate.evaluate import StopEvaluation
        from .rundir import mark_stopped
        try:
            yield
        except StopEvaluation:
            self.restore()
            e = self.in_evaluation(None, run_dir=run_dir, progress=progress)
            mark_stopped(run_dir, e, enabled=enabled)
            raise e from None
        except CheckpointError as e:
            self.restore()
            err = RunError(f"{e}. {last_checkpoint_hint(run_dir)}")
            progress.message(f"error: {err}")
            mark_stopped(run_dir, err, enabled=enabled)
            raise err from e
        except BaseException:
            self.restore()
            raise

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}

    def __exit__(self, *exc) -> None:
        self.restore()

    def requested(self, epoch: int, done: int) -> bool:
        """True once a signal arrived, or at ``stop_at``."""
        return self.signum is not None or self.stop_at == (epoch, done)

    def stopped(self, e: Interrupted, *, epoch: int, run_dir: Path | None, progress) -> Interrupted:
        """The stop mid-epoch, after its checkpoint: no rank exits before rank 0 wrote it."""
        barrier()  # torchrun would kill rank 0 mid-save once another rank exits
        progress.message(f"stopped ({signal_name(self.signum)}) at epoch {epoch + 1} step {e.step_in_epoch}; "
                         f"checkpoint written. Continue with: sotakit train --resume {run_dir}")
        e.signum = self.signum
        return e

    def at_epoch_end(self, epoch: int, *, run_dir: Path | None, progress) -> Interrupted:
        """The stop between epochs (the epoch's own checkpoint is the one to resume from)."""
        progress.message(f"stopped ({signal_name(self.signum)}) after epoch {epoch + 1}. "
                         f"Continue with: sotakit train --resume {run_dir}")
        barrier()
        return Interrupted(0, signum=self.signum)

    def in_evaluation(self, epoch: int | None, *, run_dir: Path | None, progress) -> Interrupted:
        """The stop during an evaluation: after epoch ``epoch``'s (its training is saved, the evaluation
        is redone on resume), or during the final one (``epoch`` None: every epoch is saved)."""
        what = (f"during the evaluation after epoch {epoch + 1}; the epoch's training is saved and its "
                "evaluation is redone on resume" if epoch is not None else
                "during the final evaluation; every epoch is trained and saved, a resume only evaluates")
        progress.message(f"stopped ({signal_name(self.signum)}) {what}. "
                         f"Continue with: sotakit train --resume {run_dir}")
        barrier()
        return Interrupted(0, signum=self.signum)


def is_loader_failure(e: BaseException) -> bool:
    """A dead, killed or timed-out DataLoader worker. PyTorch raises a plain RuntimeError naming the
    DataLoader; a worker killed while it sends a batch can instead surface as a broken connection
    (ConnectionResetError, EOFError) from the queue, before the worker's death is noticed."""
    return isinstance(e, (ConnectionError, EOFError)) or "DataLoader" in str(e)


@contextmanager
def failures_as_run_errors(run_dir: Path | None, *, dist_info: DistInfo, dist_timeout: float):
    """Checkpoint, data-loading and DDP failures become a RunError naming the last good checkpoint;
    a non-finite loss keeps its type and gains the hint. Anything else passes unchanged.

    fit() holds it around the whole epoch loop (training, evaluation, saving): a worker that dies
    during evaluation is a data-loading failure too, and under DDP any rank's RuntimeError there
    would leave its peers waiting in the next collective, so they are killed in every case.
    """
    try:
        yield
    except NonFiniteLossError as e:
        raise NonFiniteLossError(e.epoch, e.step, e.value, e.skipped,
                                 hint=last_checkpoint_hint(run_dir)) from None
    except RunError:
        raise
    except CheckpointError as e:
        kill_local_peers(dist_info)  # they would wait for rank 0 in the next collective
        raise RunError(f"{e}. {last_checkpoint_hint(run_dir)}") from e
    except (RuntimeError, ConnectionError, EOFError) as e:
        loading = is_loader_failure(e)
        if not (loading or dist_info.enabled):
            raise
        if loading:
            kill_loader_workers()  # a hung worker would block the interpreter's exit
        if dist_info.enabled:  # the others would wait in a collective until the timeout
            kill_local_peers(dist_info)
        what = "data loading failed" if loading else (
            f"DDP training failed (a peer died, or did not answer within --dist-timeout {dist_timeout:g}s)")
        first = (str(e).splitlines() or [type(e).__name__])[0].rstrip(". ")
        raise RunError(f"{what}: {first}. {last_checkpoint_hint(run_dir)}") from e


def last_checkpoint_hint(run_dir: Path | None) -> str:
    found = [Path(run_dir) / n for n in (LAST, PREV) if run_dir is not None and (Path(run_dir) / n).exists()]
    if not found:
        return "No checkpoint was written yet."
    return f"The last good checkpoint is {found[0]}; continue with: sotakit train --resume {run_dir}"


def signal_name(signum: int | None) -> str:
    return signal.Signals(signum).name if signum is not None else "stop_at"
