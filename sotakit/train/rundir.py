"""The run directory: resolved recipe, metrics log (JSON lines + TensorBoard), summary, curves.

``runs/<YYYYmmdd-HHMMSS>-<name>/`` is the single source of truth for a run; everything a later
command (eval, resume, report) needs is read back from it.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import subprocess
import time
import tomllib
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Callable

import torch
import torchvision

from .. import _version
from ..data import write_data_report
from ..recipes import dump_recipe
from .checkpoint import CheckpointError, WriteError, write_text_atomic
from .loop import Interrupted, NonFiniteLossError
from .recipe_kwargs import run_dir_kwargs
from .stops import RunError

PID_FILE = "run.pid"  # present while a process trains the run: {"pid", "host", "started"}
FAILED_FILE = "failed.json"  # written when training stopped on an error (not on a stop request)
LOCK_FILE = ".run.lock"  # flock()ed by the process that trains the run; the kernel drops it at its death
_PID_PAD = 1024  # run.pid is padded to this size: on a full disk it becomes failed.json in place
_HELD: dict[str, int] = {}  # run directory -> fd of its lock, for the run directories this process owns


class RunBusyError(ValueError):
    """Another live process trains this run directory (its lock is held)."""


def claim_run(run_dir: Path) -> None:
    """Own ``run_dir`` before anything else is done with it: an exclusive, non-blocking flock on its
    .run.lock (atomic; released by the kernel when the process dies, even by SIGKILL, so a stale run.pid
    never blocks), then run.pid. A second claim by this process is a no-op."""
    import fcntl
    key = str(Path(run_dir).resolve())
    if key in _HELD:
        return
    fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        owner = run_owner(run_dir)
        who = (f"process {owner[0].get('pid')} on {owner[0].get('host')}" if owner else "another process")
        raise RunBusyError(f"refusing to train {run_dir}: {who} is training it (it holds {LOCK_FILE}). "
                           "Wait for it to end, or stop it first.") from None
    _HELD[key] = fd
    mark_running(run_dir)


def release_run(run_dir: Path | None) -> None:
    """Give up the ownership ``claim_run`` took (fit() does on every way out)."""
    if run_dir is None:
        return
    fd = _HELD.pop(str(Path(run_dir).resolve()), None)
    if fd is not None:
        os.close(fd)


def runs_root(output_dir: str | Path = ".") -> Path:
    """Where ``sotakit train`` creates run directories (``--output-dir``, default: the current one)."""
    return Path(output_dir) / "runs"


def create_run_dir(output_dir: str | Path, name: str) -> Path:
    """A new, unique run directory under ``output_dir/runs``."""
    base = runs_root(output_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(100):
        path = base / (f"{stamp}-{name}" if k == 0 else f"{stamp}-{name}-{k}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run directory under {base}")


def open_run_dir(point, *, recipe, notes: list[str], data_report, totals, load_all: bool = True,
                 is_main: bool = True, say: Callable[[str], None] = print) -> Path | None:
    """The run directory of a run starting at ``point`` (a resume.ResumePoint); None on other ranks
    of a fresh run. A new run gets its folder, recipe.toml (with the notes) and data_report.csv; a
    resumed one drops what was logged after its checkpoint, so redone steps are not logged twice
    (not after a forced resume onto another model: that one starts afresh)."""
    if point.ckpt is not None:
        if is_main and load_all:
            trim_metrics(point.run_dir, totals.epoch, totals.step)
        return point.run_dir
    if point.resumed:
        say(f"{point.run_dir} has no checkpoint yet: starting it over")
        if is_main:
            trim_metrics(point.run_dir, 0, 0)
        return point.run_dir
    if not is_main:
        return None
    run_dir = create_run_dir(**run_dir_kwargs(recipe))
    claim_run(run_dir)
    meta = {"notes": "; ".join(notes)} if notes else None
    write_text_atomic(run_dir / "recipe.toml", dump_recipe(recipe, meta))
    if data_report:
        try:
            write_data_report(run_dir / "data_report.csv", data_report)
        except OSError as e:  # a full disk: the same clear stop as any other write
            raise WriteError(f"could not write {run_dir / 'data_report.csv'}: {e}") from e
    return run_dir


@contextmanager
def run_lifecycle(run_dir: Path | None, *, enabled: bool, progress, log: "MetricsLog"):
    """run.pid while the loop runs (`sotakit runs` tells running from interrupted); on the way out the
    progress display closes, and an early exit also closes the log, drops run.pid and records an error.
    A clean exit leaves the log open: the final metrics go through it (``MetricsLog.finish``)."""
    mark_running(run_dir, enabled=enabled)
    try:
        yield
    except BaseException as e:
        if isinstance(e, (NonFiniteLossError, RunError)):
            progress.message(f"error: {e}")
        progress.close()
        log.close()
        mark_stopped(run_dir, e, enabled=enabled)
        raise
    progress.close()


def finish_run(run_dir: Path, summary: dict[str, Any]) -> None:
    """summary.json, weights.safetensors (the model it reports, with its meta), run.pid gone (finished),
    curves.png."""
    from .run_weights import write_finished_weights
    write_json(run_dir / "summary.json", summary)
    write_finished_weights(run_dir, summary)
    mark_finished(run_dir)
    plot_curves(run_dir)


def final_scalars(final: dict[str, dict]) -> dict[str, float]:
    """``final_evaluation``'s metrics as TensorBoard/tracker scalars: ``final/test_acc1``,
    ``final/test_ema_loss``, ... (acc@k that is not reported, None, and the image count ``n`` left out)."""
    return {f"final/{split}_{k}": float(v) for split, metrics in final.items() for k, v in metrics.items()
            if k != "n" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def hparam_values(params: dict[str, Any]) -> dict[str, int | float | str | bool]:
    """The recipe as TensorBoard hparams, which take int, float, str and bool only: None and lists as text."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}


class MetricsLog:
    """Appends one JSON line per record to metrics.jsonl and mirrors scalars to TensorBoard.

    ``epoch`` in metrics.jsonl counts from 0 (the checkpoint's and ``stop_at``'s count, what resume,
    `sotakit runs` and the report read); the console and curves.png count from 1: the record with
    ``"epoch": 0`` is the console's ``epoch 1/N``. Step records' ``step`` is steps done in that epoch.

    The events are written into the run directory itself, so ``tensorboard --logdir runs`` names each run
    by its folder (a run started before that keeps its ``tensorboard/`` subfolder when resumed).
    ``finish`` adds the final metrics and the recipe as hyperparameters (TensorBoard's HParams tab, where
    the runs of a sweep or ablation compare) and closes; as a context manager it closes on any exit.

    Without a run directory (``run_dir`` None: another rank, a test) it is disabled.
    """

    def __init__(self, run_dir: Path | None, enabled: bool = True, tracker: str | None = None):
        enabled = enabled and run_dir is not None
        self.run_dir, self.path = run_dir, run_dir / "metrics.jsonl" if run_dir is not None else None
        self.enabled = enabled
        self.tb = self.tracker = None
        self.last_step = 0  # the global step of the last record: the final metrics are logged at it
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                old = run_dir / "tensorboard"
                _quiet_event_writer_threads()
                self.tb = SummaryWriter(log_dir=str(old if old.is_dir() else run_dir))
            except ImportError:  # tensorboard is optional; metrics.jsonl is the record
                self.tb = None
            except OSError as e:
                raise WriteError(f"could not write the TensorBoard events in {run_dir}: {e}") from e
        if enabled and tracker:
            import tomllib

            from .trackers import Tracker
            params = tomllib.loads((run_dir / "recipe.toml").read_text())["recipe"]
            self.tracker = Tracker(tracker, run_dir=run_dir, params=params)

    def write(self, record: dict[str, Any], *, global_step: int) -> None:
        if not self.enabled:
            return
        self.last_step = global_step
        append_record(self.path, json.dumps(record))
        kind = record.get("kind", "step")
        scalars = {f"{kind}/{k}": v for k, v in record.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step")}
        if self.tb is not None:
            with self._events():
                for k, v in scalars.items():
                    self.tb.add_scalar(k, v, global_step)
        if self.tracker is not None:
            self.tracker.log(scalars, step=global_step)

    def finish(self, final: dict[str, dict], *, hparams: dict[str, Any]) -> None:
        """The final metrics (``final_evaluation``'s, as ``final/<split>_<metric>`` at the last step) and the
        recipe as hyperparameters to TensorBoard and the tracker, then close. metrics.jsonl does not get
        them: summary.json holds them."""
        if not self.enabled:
            return
        scalars = final_scalars(final)
        if self.tb is not None:
            from torch.utils.tensorboard.summary import hparams as hparams_summary

            # Written into the run's own event file (SummaryWriter.add_hparams would make a subfolder run).
            with self._events():
                writer = self.tb._get_file_writer()
                for proto in hparams_summary(hparam_values(hparams), scalars):
                    writer.add_summary(proto)
                for k, v in scalars.items():
                    self.tb.add_scalar(k, v, self.last_step)
                self.tb.flush()
        if self.tracker is not None:
            self.tracker.log(scalars, step=self.last_step)
        self.close()

    @contextmanager
    def _events(self):
        """TensorBoard writes (its background thread re-raises a failed write here) as WriteError."""
        try:
            yield
        except OSError as e:
            tb, self.tb = self.tb, None
            with suppress(Exception):  # the writer is broken: drop it without another flush
                tb.close()
            raise WriteError(f"could not write the TensorBoard events in {self.run_dir}: {e}") from e

    def close(self) -> None:
        """Flush and close TensorBoard and the tracker; closing again does nothing. After a failure (a full
        disk) closing cannot fail again: the error being reported is the one that counts."""
        tb, tracker, self.tb, self.tracker = self.tb, self.tracker, None, None
        with suppress(Exception):
            if tb is not None:
                tb.close()
        if tracker is not None:
            tracker.close()

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def append_record(path: Path, line: str) -> None:
    """Append one JSON line whole or not at all: a line torn by an earlier kill is closed first, and a
    write that fails (ENOSPC, EIO, EFBIG) is cut back off and raised as WriteError. Unbuffered, so no
    buffer is left to fail again when the file closes."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        end = os.fstat(fd).st_size
        torn = end > 0 and os.pread(fd, 1, end - 1) != b"\n"
        data = memoryview((b"\n" if torn else b"") + line.encode() + b"\n")
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError as e:
            with suppress(OSError):
                os.ftruncate(fd, end)
            raise WriteError(f"could not write {path}: {e}") from e
    finally:
        os.close(fd)


_THREAD_HOOK = None


def _quiet_event_writer_threads() -> None:
    """TensorBoard's writer thread re-raises a failed write (a full disk) after storing it for the main
    thread, which then raises it again: the thread's own traceback is dropped (only that thread's)."""
    global _THREAD_HOOK
    import threading
    if _THREAD_HOOK is not None:
        return
    _THREAD_HOOK = previous = threading.excepthook

    def hook(args):
        if type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(args.exc_type, OSError):
            return
        previous(args)
    threading.excepthook = hook


def mark_running(run_dir: Path | None, *, enabled: bool = True) -> None:
    """Write run.pid (this process and host), so `sotakit runs` can tell running from interrupted."""
    if run_dir is None or not enabled:
        return
    (Path(run_dir) / FAILED_FILE).unlink(missing_ok=True)  # a resumed run is no longer failed
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": process_start(os.getpid())}
    write_text_atomic(Path(run_dir) / PID_FILE, json.dumps(info).ljust(_PID_PAD) + "\n")


def mark_stopped(run_dir: Path | None, error: BaseException | None, *, enabled: bool = True) -> None:
    """On the way out of the training loop: drop run.pid when it stopped early, and record an error.

    A clean loop exit keeps run.pid until ``mark_finished`` (the final evaluation is still running).
    """
    if run_dir is None or not enabled or error is None:
        return
    release_run(run_dir)
    if not isinstance(error, (KeyboardInterrupt, Interrupted)):
        record_failure(Path(run_dir), f"{type(error).__name__}: {error}")
    (Path(run_dir) / PID_FILE).unlink(missing_ok=True)


def record_failure(run_dir: Path, error: str) -> None:
    """failed.json with the error. On a full disk (or EIO) the padded run.pid is renamed to failed.json
    and overwritten in place, which needs no new block, so a failed run is never listed as running."""
    text = json.dumps({"error": error}, indent=2)
    try:
        write_json(run_dir / FAILED_FILE, {"error": error})
        return
    except (OSError, CheckpointError):  # write_text_atomic reports a failed write as CheckpointError
        pass
    pid = run_dir / PID_FILE
    try:
        os.replace(pid, run_dir / FAILED_FILE)
        with open(run_dir / FAILED_FILE, "r+b") as f:
            data = text.encode()[:_PID_PAD - 2]
            if not data.endswith(b"}"):  # cut short: keep it valid JSON
                data = json.dumps({"error": error[:_PID_PAD // 2]}).encode()[:_PID_PAD - 2]
            f.write(data.ljust(_PID_PAD) + b"\n")
            f.truncate()
    except OSError:
        pass  # nothing left to write with; the error was printed


def mark_finished(run_dir: Path | None, *, enabled: bool = True) -> None:
    """summary.json is written: the run no longer needs a liveness file."""
    if run_dir is not None and enabled:
        (Path(run_dir) / PID_FILE).unlink(missing_ok=True)
        release_run(run_dir)


def run_owner(run_dir: Path) -> tuple[dict, bool | None] | None:
    """(run.pid record, is its process alive?) or None without a readable run.pid; alive is None
    when the process runs on another host, where we cannot look."""
    try:
        info = json.loads((Path(run_dir) / PID_FILE).read_text())
        return info, process_alive(info)
    except (OSError, ValueError, KeyError):
        return None


def process_alive(info: dict) -> bool | None:
    """Whether the process named in a run.pid record lives; None when it runs on another host."""
    if info.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(info["pid"]), 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    # The PID may have been reused by another program since: its start time tells (its command line, for
    # a run.pid written before the start time was recorded).
    started = info.get("started")
    if started is not None:
        return process_start(int(info["pid"])) == started
    try:
        return b"sotakit" in Path(f"/proc/{int(info['pid'])}/cmdline").read_bytes()
    except OSError:
        return True


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def trim_metrics(run_dir: Path, epoch: int, step: int) -> int:
    """Drop the records logged after the checkpoint a resume starts from (epoch ``epoch``, ``step``
    steps into it), so redone steps are not logged twice; returns how many were dropped."""
    records = read_metrics(run_dir)
    keep = [r for r in records if (r.get("epoch", 0) < epoch if r.get("kind") == "epoch"
                                   else (r.get("epoch", 0), r.get("step", 0)) <= (epoch, step))]
    if len(keep) != len(records):
        write_text_atomic(Path(run_dir) / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in keep))
    return len(records) - len(keep)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl; a line torn by a crash (or otherwise unreadable) is skipped with a
    warning naming the file and line, so resume, `sotakit runs` and `report` go on."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            logging.getLogger("sotakit").warning(f"warning: {path} line {i} cannot be read ({e}): skipped")
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def environment() -> dict[str, Any]:
    """Versions and code revision stored with every result."""
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "torchvision": torchvision.__version__, "sotakit": _version.__version__,
           "machine": platform.machine(), "processor": platform.processor() or "",
           "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
           "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        repo = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        env["git_commit"] = out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def plot_curves(run_dir: Path) -> Path | None:
    """curves.png: loss, accuracy and learning rate over (fractional) epochs."""
    fig = curves_figure(run_dir)
    if fig is None:
        return None
    import matplotlib.pyplot as plt
    out = run_dir / "curves.png"
    try:
        fig.savefig(out, dpi=100)
    except OSError as e:
        raise WriteError(f"could not write {out}: {e}") from e
    finally:
        plt.close(fig)
    return out


def step_positions(records: list[dict], *, batch_size: int | None) -> list[float]:
    """Fractional epochs of the step records: epoch (from 0) + steps done / steps per epoch, so the end
    of the console's epoch N is at N. Steps per epoch from the epoch records' image count and the
    batch size (the last step of an epoch is partial), else the largest step logged."""
    steps = [r for r in records if r.get("kind") == "step"]
    n = next((r["train_n"] for r in records if r.get("kind") == "epoch" and "train_n" in r), None)
    per_epoch = -(-n // batch_size) if n and batch_size else max((r["step"] for r in steps), default=1)
    return [r["epoch"] + r["step"] / max(per_epoch, 1) for r in steps]


def curves_figure(run_dir: Path):
    """The matplotlib figure of curves.png (None before the first epoch ends).

    Epoch records (validation, and training as averaged over the epoch) are large markers at the end
    of each epoch; the step records (every --print-freq steps) are lines at their fractional epoch,
    so a one-epoch run still shows a curve and the lr panel shows per-step schedules (warm-up, cosine
    per step) as they ran. Epochs count from 1 here as on the console (metrics.jsonl's ``epoch`` is
    0-based: epoch 0 ends at 1).
    """
    records = read_metrics(run_dir)
    epochs = [r for r in records if r.get("kind") == "epoch"]
    if not epochs:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if r.get("kind") == "step"]
    try:
        batch_size = tomllib.loads((run_dir / "recipe.toml").read_text())["recipe"].get("batch_size")
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        batch_size = None
    xs = step_positions(records, batch_size=batch_size)
    x = [r["epoch"] + 1 for r in epochs]
    mark = {"marker": "o", "markersize": 8 if len(epochs) > 1 else 11}
    split = epochs[0].get("val_split", "val")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    if steps:
        axes[0].plot(xs, [r["loss"] for r in steps], "-", color="C0", alpha=0.35, label="train, per step")
        axes[1].plot(xs, [r["acc1"] for r in steps], "-", color="C0", alpha=0.35,
                     label="train acc@1, per step")
    axes[0].plot(x, [r["train_loss"] for r in epochs], "-", color="C0", **mark,
                 label="train epoch mean (as optimized: smoothing, mixing)")
    axes[0].plot(x, [r["val_loss"] for r in epochs], "-", color="C1", **mark, label=split)
    axes[0].set_title("loss")
    axes[1].plot(x, [r["train_acc1"] for r in epochs], "-", color="C0", **mark,
                 label="train acc@1 (epoch mean)")
    axes[1].plot(x, [r["val_acc1"] for r in epochs], "-", color="C1", **mark, label=f"{split} acc@1")
    if any("ema_acc1" in r for r in epochs):
        axes[1].plot(x, [r.get("ema_acc1", float("nan")) for r in epochs], "-", color="C2", **mark,
                     label=f"EMA {split} acc@1")
    axes[1].set_title("accuracy (%)")
    if steps:
        axes[2].plot(xs, [r["lr"] for r in steps], ".-", markersize=3)
        axes[2].set_title("learning rate (logged steps)")
    else:  # no step records: the lr each epoch ran at, held over the epoch
        axes[2].step([r["epoch"] for r in epochs] + [epochs[-1]["epoch"] + 1],
                     [r["lr"] for r in epochs] + [epochs[-1]["lr"]], where="post")
        axes[2].set_title("learning rate (per epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    return fig
