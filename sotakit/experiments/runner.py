"""The multi-seed runner shared by ablate, sweep and K-fold: recipe files in, results.jsonl out.

pycls's sweep layout: every configuration is a resolved recipe file before anything starts
(setup); each finished (configuration, seed, fold) appends one JSON line to ``results.jsonl``
(launch); tables and plots are made from that file alone (collect, analyze). Re-running the same
command skips finished runs, so an interrupted ablation or sweep resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from ..recipes import Recipe, load_recipe
from ..recipes.recipe import recipe_hash
from ..train.loop import Interrupted
from ..train.progress import TaskProgress
from .stats import mean_std, summarize

# An entry: (name, title, recipe file). Ladder steps and sweep grid points are both entries.
Entry = tuple[str, str, Path]


def config_key(recipe: Recipe) -> str:
    """Identifies a configuration independent of seed, fold and naming: the key of results.jsonl
    (stored in its records as "recipe_hash", the name older results files use)."""
    return recipe_hash(recipe, ignore=("seed", "run_name", "output_dir", "recipe_name", "resume", "fold"))


def out_dir_for(kind: str, label: str, key: list) -> Path:
    """Default directory of an ablation or sweep, ``kind/label-HASH``: HASH names the flags in ``key``,
    so the same command resumes in the same directory and other flags do not pool their runs there."""
    return Path(kind) / f"{label}-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:6]}"


def read_results(results: Path) -> list[dict]:
    """The records of results.jsonl, each (configuration, seed, fold) once (the first recorded: a directory
    two experiments once trained at the same time holds duplicates, which would count as n = 2 with std 0);
    a line torn by a kill mid-write is skipped (its run reruns)."""
    if not results.exists():
        return []
    out, seen = [], set()
    for line in results.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
            key = (rec["recipe_hash"], rec["seed"], rec.get("fold"))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        if key not in seen:
            seen.add(key)
            out.append(rec)
    return out


class ExperimentBusyError(ValueError):
    """Another ablate/sweep/kfold process runs in the same experiment directory."""


LOCK_FILE = ".experiment.lock"


@contextmanager
def experiment_lock(out_dir: Path):
    """Own ``out_dir`` while its runs train: an exclusive, non-blocking flock (released by the kernel when
    the process dies). A second experiment on the same directory refuses, naming the first, instead of
    training every point a second time."""
    import fcntl
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise ExperimentBusyError(f"{out_dir} is in use by {holder}: wait for it to end (re-running the "
                                      "same command afterwards runs only what is missing), or give another "
                                      "--out") from None
        os.ftruncate(fd, 0)
        what = " ".join(["sotakit", *sys.argv[1:2]])
        os.pwrite(fd, f"process {os.getpid()} ({what}), started "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def append_line(path: Path, text: str) -> None:
    """Append a line, first closing a line torn by an earlier kill so the two do not merge."""
    with open(path, "ab+") as f:
        f.seek(0, os.SEEK_END)
        torn = f.tell() > 0 and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n"
        f.write((b"\n" if torn else b"") + text.encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())


def finished(results: Path) -> set[tuple[str, int, int | None]]:
    return {(r["recipe_hash"], r["seed"], r.get("fold")) for r in read_results(results)}


def folds_of(recipe: Recipe) -> list[int | None]:
    """The folds a configuration runs on: all K with --kfold K, else one run without folds."""
    return list(range(recipe.kfold)) if recipe.kfold else [None]


def count_runs(entries: list[Entry], seeds: int) -> int:
    """How many (entry, seed, fold) runs ``run_recipes`` plans for these entries."""
    return sum(seeds * len(folds_of(load_recipe(path))) for _, _, path in entries)


def runs_to_do(entries: list[Entry], out_dir: Path, *, seeds: int,
               check_busy: bool = True) -> list[tuple[Path, int, int | None]]:
    """The (recipe file, seed, fold) runs of ``entries`` not yet recorded in out_dir/results.jsonl.

    ``check_busy``: refuse at once (ExperimentBusyError) when another experiment holds the directory,
    before the plan's time estimate trains anything."""
    if check_busy and (out_dir / LOCK_FILE).exists():
        with experiment_lock(out_dir):
            pass
    done = finished(out_dir / "results.jsonl")
    todo = []
    for _, _, path in entries:
        recipe = load_recipe(path)
        key = config_key(recipe)
        todo += [(path, seed, fold) for seed in range(seeds) for fold in folds_of(recipe)
                 if (key, seed, fold) not in done]
    return todo


class RunInterrupted(Exception):
    """A child run stopped on a forwarded signal; its checkpoint is kept and the next run resumes it."""


class Children:
    """The training processes an experiment runs, so a signal to the experiment reaches them.

    Children run in their own session (a Ctrl-C in the terminal reaches them once, forwarded, not twice);
    on SIGTERM/SIGINT/SIGUSR1/SIGHUP the runner forwards the signal, starts nothing new and waits for them
    to checkpoint and exit. Each child also gets SIGTERM if the runner dies (PR_SET_PDEATHSIG), so none is
    orphaned."""

    def __init__(self):
        self.procs, self.signum, self.lock = set(), None, threading.Lock()

    def run(self, cmd: list[str], env: dict) -> subprocess.CompletedProcess:
        """``cmd`` to the end (output captured), reachable by ``forward`` meanwhile."""
        with self.lock:
            if self.signum is not None:
                raise RunInterrupted("not started: the experiment is stopping")
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                 start_new_session=True, preexec_fn=_die_with_parent)
            self.procs.add(p)
        try:
            stdout, stderr = p.communicate()
        finally:
            with self.lock:
                self.procs.discard(p)
        return subprocess.CompletedProcess(cmd, p.returncode, stdout, stderr)

    def forward(self, signum, frame=None) -> None:
        if signum == signal.SIGINT and self.signum is not None:
            os._exit(128 + signal.SIGINT)  # a second Ctrl-C: at once (the children got the first)
        with self.lock:
            self.signum = signum
            for p in self.procs:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    @contextmanager
    def handling_signals(self):
        old = {}
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
            with contextlib.suppress(ValueError):  # not the main thread
                old[s] = signal.signal(s, self.forward)
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


_CHILDREN = Children()


def unfinished_run(out_dir: Path, name: str) -> Path | None:
    """The run directory an earlier, interrupted attempt at ``name`` left under out_dir/runs (resumed, not
    started over), or None."""
    pattern = re.compile(rf"^\d{{8}}-\d{{6}}-{re.escape(name)}(-\d+)?$")
    found = sorted(p for p in (out_dir / "runs").glob(f"*{name}*") if pattern.match(p.name)
                   and (p / "recipe.toml").is_file()) if (out_dir / "runs").is_dir() else []
    return found[-1] if found else None


def run_one(path: Path, seed: int, out_dir: Path, threads: int, fold: int | None = None,
            children: Children | None = None, tracker: str | None = None) -> dict:
    """Train one (entry, seed, fold) in its own process with ``threads`` intra-op threads; return its result.

    The child names its run directory in a file given by ``--run-dir-file`` (its printed output is
    for people and may change). The run is named after the entry, seed, fold and configuration, so an
    attempt interrupted earlier is found and resumed from its checkpoint (a finished one not yet
    recorded is only read). ``tracker`` ("mlflow", "wandb") is passed on as ``--tracker``.
    """
    recipe = load_recipe(path)
    name = (f"{path.stem}-s{seed}" + (f"-f{fold}" if fold is not None else "")
            + f"-{config_key(recipe)[:6]}")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.time()
    earlier = unfinished_run(out_dir, name)
    children = children or _CHILDREN
    with tempfile.TemporaryDirectory(prefix="sotakit-run-") as tmp:
        run_dir_file = Path(tmp) / "run_dir"
        if earlier is not None and (earlier / "summary.json").is_file():
            run_dir_file.write_text(f"{earlier}\n")
            cmd = None
        elif earlier is not None:
            cmd = [sys.executable, "-m", "sotakit", "train", "--resume", str(earlier),
                   "--run-dir-file", str(run_dir_file)]
        else:
            cmd = [sys.executable, "-m", "sotakit", "train", "--config", str(path), "--seed", str(seed),
                   "--output-dir", str(out_dir), "--run-name", name, "--run-dir-file", str(run_dir_file)]
            cmd += ["--fold", str(fold)] if fold is not None else []
        if cmd is not None and tracker:
            cmd += ["--tracker", tracker]
        if cmd is not None:
            proc = children.run(cmd, env)
            if proc.returncode != 0 and children.signum is not None:
                raise RunInterrupted(f"{name} stopped (exit {proc.returncode}); its checkpoint is kept")
            if proc.returncode != 0:
                raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
            if not run_dir_file.is_file():
                raise RuntimeError(f"{name} exited 0 without naming its run directory in --run-dir-file:\n"
                                   f"{proc.stdout[-2000:]}")
        run_dir = Path(run_dir_file.read_text().strip())
    s = json.loads((run_dir / "summary.json").read_text())
    return {"step": path.stem, "seed": seed, "fold": fold, "recipe_hash": config_key(recipe),
            "run_dir": str(run_dir), **result_metrics(s),
            "wall_time_s": time.time() - t0, "train_time_s": s.get("train_time_s"),
            "img_s": s["median_img_s"], "environment": s["environment"]}


def result_metrics(summary: dict) -> dict:
    """acc@1/acc@5 of the plain and EMA model on the test split, and on the validation fold (val_*) if any."""
    out = {}
    for prefix, split in (("", "test"), ("val_", "holdout")):
        for model, suffix in (("", ""), ("ema_", "_ema")):
            m = summary.get(split + suffix, {})
            out.update({f"{prefix}{model}acc1": m.get("acc1"), f"{prefix}{model}acc5": m.get("acc5")})
    tta = summary.get("test_ema_tta") or summary.get("test_tta")  # the model reported_acc reports
    if tta:
        out["tta_acc1"] = tta["acc1"]  # kept apart from acc1: a table of its own (ablation.tta_table)
    return out


def reported_acc(rec: dict, *, split: str | None = None) -> tuple[float, float]:
    """The (acc@1, acc@5) a table reports for a record.

    The EMA model when the recipe has one (as the blog's EMA step does); on the validation fold for a
    K-fold run (the split the K-fold estimate is about), else on the test split. ``split`` forces
    "test" or "val".
    """
    prefix = "val_" if (split or ("val" if rec.get("fold") is not None else "test")) == "val" else ""
    ema = rec.get(f"{prefix}ema_acc1") is not None
    model = f"{prefix}ema_" if ema else prefix
    return rec[f"{model}acc1"], rec[f"{model}acc5"]


class RunsFailedError(RuntimeError):
    """Some runs of an ablation or sweep failed; the others' results are kept. The first line names them."""


def run_recipes(entries: list[Entry], out_dir: Path, *, seeds: int, jobs: int = 1, say=None,
                tracker: str | None = None) -> list[dict]:
    """Run every (entry, seed, fold) not yet in results.jsonl, ``jobs`` at a time; return all results.

    ``say`` gets a line per finished run (default: the "sotakit" logger), and the progress display the
    runs done of the total with the time left at the pace so far."""
    with experiment_lock(out_dir), _CHILDREN.handling_signals():
        return _run_recipes(entries, out_dir, seeds=seeds, jobs=jobs,
                            say=say or logging.getLogger("sotakit.experiments").info, tracker=tracker)


def job_threads(jobs: int) -> int:
    """Intra-op threads per job: the machine's cores divided between the jobs, at most OMP_NUM_THREADS
    when it is set (a job sharing the machine with other work: more threads than free cores spin-wait
    in OpenMP, about 10x slower per step on a busy 2-core machine)."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(cap)) if cap.isdigit() and int(cap) > 0 else threads


class ExperimentInterrupted(Interrupted):
    """The experiment was stopped by a signal; its children checkpointed, the next run resumes them."""


def _run_recipes(entries: list[Entry], out_dir: Path, *, seeds: int, jobs: int, say,
                 tracker: str | None = None) -> list[dict]:
    results = out_dir / "results.jsonl"
    _CHILDREN.signum = None
    todo = runs_to_do(entries, out_dir, seeds=seeds, check_busy=False)
    say(f"{len(todo)} runs to do, {count_runs(entries, seeds) - len(todo)} already finished")
    threads = job_threads(jobs)

    failures, stopped, lock = [], [], threading.Lock()
    progress, ended = TaskProgress(out_dir.name, unit="runs", rate=False), [0]

    def one(job):
        path, seed, fold = job
        try:
            rec = run_one(path, seed, out_dir=out_dir, threads=threads, fold=fold,
                          **({"tracker": tracker} if tracker else {}))
        except RunInterrupted as e:
            stopped.append(str(e))
            return None
        except Exception as e:  # one failed run must not stop the others; it is reported at the end
            where = f" fold {fold}" if fold is not None else ""
            failures.append((f"{path.stem} seed {seed}{where}", str(e)))
            _ended()
            return None
        with lock:  # one line per finished run: an interruption loses no result; each run counted once
            if (rec["recipe_hash"], rec["seed"], rec.get("fold")) not in finished(results):
                append_line(results, json.dumps(rec))
        where = f" fold {fold}" if fold is not None else ""
        say(f"{rec['step']} seed {seed}{where}: acc@1 {reported_acc(rec)[0]:.2f} ({rec['wall_time_s']:.0f}s)")
        _ended()
        return rec

    def _ended():  # a run finished (or failed): runs k/N, ETA at the pace so far
        with lock:
            ended[0] += 1
            progress(ended[0], len(todo))

    if todo:
        progress(0, len(todo))  # the clock starts with the first run
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(one, todo))
    if _CHILDREN.signum is not None:
        from ..train.stops import signal_name
        raise ExperimentInterrupted(0, signum=_CHILDREN.signum, message=(
            f"stopped ({signal_name(_CHILDREN.signum)}): {len(stopped)} run(s) interrupted with their "
            f"checkpoints, finished runs kept in {results}; re-run the same command to resume them"))
    if failures:
        raise RunsFailedError(f"{len(failures)} run(s) failed; re-run the same command to retry only them "
                              f"(finished runs are kept in {results}): {', '.join(n for n, _ in failures)}\n"
                              + "\n".join(f"{name}: {why}" for name, why in failures))
    return read_results(results)


def results_for(entries: list[Entry], out_dir: Path) -> list[dict]:
    """Records of exactly these entries' recipes: a directory reused with other overrides is not pooled."""
    wanted = {config_key(load_recipe(path)) for _, _, path in entries}
    return [r for r in read_results(out_dir / "results.jsonl") if r["recipe_hash"] in wanted]


def fold_table(entries: list[Entry], records: list[dict]) -> str | None:
    """Markdown: per entry, validation acc@1 per fold (mean over seeds), mean ± std over all fold
    runs, and the test split's acc@1 reported separately (never used to choose). None without folds."""
    recs = [r for r in records if r.get("fold") is not None]
    if not recs:
        return None
    k = max(r["fold"] for r in recs) + 1
    folds = " | ".join(f"fold {f}" for f in range(k))
    lines = [f"| configuration | {folds} | val mean ± std | n | test mean ± std |", "|" + "---|" * (k + 4)]
    for name, title, _ in entries:
        mine = [r for r in recs if r["step"] == name]
        if not mine:
            continue
        per = [[reported_acc(r)[0] for r in mine if r["fold"] == f] for f in range(k)]
        val = [reported_acc(r)[0] for r in mine]
        test = [reported_acc(r, split="test")[0] for r in mine]
        cells = [f"{summarize(v).mean:.2f}" if v else "-" for v in per]
        lines.append(f"| {title} | " + " | ".join(cells)
                     + f" | {_mean_std(val)} | {len(val)} | {_mean_std(test)} |")
    return "\n".join(lines)


def _mean_std(values: list[float]) -> str:
    return mean_std(summarize(values))
