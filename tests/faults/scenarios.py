"""Faults run for real: each scenario launches `sotakit train` in subprocesses, breaks it, and checks
what a user would check afterwards. Used by the fast tier (tests/faults/test_*.py, 3 trials) and the
full tier (`make faults` -> tests/faults/run_full.py -> docs/reliability.md).

Every scenario returns a ``Trial``: whether the promise held, the seconds it took, and what was seen.
Runs are tiny (resnet9_w16 on 512 Fashion-MNIST images, 16 steps an epoch) and deterministic
(``--use-deterministic-algorithms``, one thread), so "identical" means equal SHA-256 fingerprints of
model, EMA and optimizer state.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cli_runner import cli_env, run_cli, start_cli
from sotakit.experiments.runner import LOCK_FILE as EXPERIMENT_LOCK
from sotakit.train.checkpoint import LAST, file_sha256, load_checkpoint, non_finite_keys, read_manifest

FMNIST = Path("/usr/share/datasets/fashion-mnist")
STEPS_PER_EPOCH, EPOCHS = 16, 2
BASE = ["--data", "fashion-mnist", "--model", "resnet9_w16", "--train-limit", "512", "--test-limit", "200",
        "-b", "32", "--epochs", str(EPOCHS), "--lr", "0.05", "--seed", "0", "--print-freq", "4",
        "--use-deterministic-algorithms", "--checkpoint-every", "4", "--device", "cpu"]
# The per-image path with a DataLoader worker, erasing and MixUp: per-sample and per-batch seeds.
WORKERS = ["--workers", "1", "--auto-augment", "ta_wide", "--random-erase", "0.25", "--mixup-alpha", "0.2",
           "--no-batch-augment"]


@dataclass
class Trial:
    held: bool
    seconds: float
    detail: str


def train_args(out: Path, *extra) -> list:
    """``sotakit train`` arguments of a tiny run writing to ``out``."""
    return ["train", *BASE, "--output-dir", out, *extra]


def resume_args(run_dir: Path) -> list:
    return ["train", "--resume", run_dir]


def only_run(out: Path) -> Path:
    runs = list((out / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def checkpointed_step(run_dir: Path) -> int:
    """The global step the run's newest verified checkpoint holds."""
    ck = load_checkpoint(run_dir)
    return ck["epoch"] * STEPS_PER_EPOCH + ck["step_in_epoch"]


def fingerprint(run_dir: Path) -> str:
    return json.loads((run_dir / "summary.json").read_text())["state_fingerprint"]


_REFERENCE: dict = {}  # configuration -> run dir; "ddp" -> fingerprint
# The full tier (run_full.py) sets this: cases with several variants try them all, the fast tier one.
THOROUGH = False


def reference(work: Path, *extra) -> str:
    """The fingerprint of an uninterrupted run (computed once per configuration)."""
    return fingerprint(reference_run(work, *extra))


def reference_run(work: Path, *extra) -> Path:
    """The run directory of an uninterrupted run of the configuration (trained once, on first use)."""
    key = tuple(extra)
    if key not in _REFERENCE:
        out = work / f"reference-{len(_REFERENCE)}"
        r = run_cli(*train_args(out, *extra))
        assert r.returncode == 0, r.stderr[-2000:]
        _REFERENCE[key] = only_run(out)
    return _REFERENCE[key]


def _finish(run_dir: Path, expected: str, t0: float, what: str, limit: int = 3) -> Trial:
    """Resume until the run finishes (at most ``limit`` times) and compare with the reference."""
    for _ in range(limit):
        r = run_cli(*resume_args(run_dir))
        if r.returncode == 0:
            got = fingerprint(run_dir)
            return Trial(got == expected, time.perf_counter() - t0,
                         f"{what}; resumed: {'identical' if got == expected else 'DIFFERENT'}")
    return Trial(False, time.perf_counter() - t0, f"{what}; resume failed: {r.stderr[-300:]}")


def kill_at_random_step(work: Path, rng: random.Random, *extra) -> Trial:
    """SIGKILL after a random step (1..31), resume from the newest checkpoint, compare."""
    expected = reference(work, *extra)
    step = rng.randint(1, STEPS_PER_EPOCH * EPOCHS - 1)
    out = work / f"kill-{step}-{rng.random():.6f}"
    t0 = time.perf_counter()
    r = run_cli(*train_args(out, *extra), fault=f"kill_at:{step}")
    if r.returncode != -signal.SIGKILL:
        return Trial(False, time.perf_counter() - t0,
                     f"expected SIGKILL at step {step}, got exit {r.returncode}")
    return _finish(only_run(out), expected, t0, f"killed -9 after step {step}")


def kill_during_save(work: Path, rng: random.Random) -> Trial:
    """SIGKILL halfway through writing the N-th checkpoint; the previous one must be chosen."""
    expected = reference(work)
    n = rng.randint(2, 8)
    out = work / f"killsave-{n}-{rng.random():.6f}"
    t0 = time.perf_counter()
    r = run_cli(*train_args(out), fault=f"kill_in_save:{n}")
    if r.returncode != -signal.SIGKILL:
        return Trial(False, time.perf_counter() - t0,
                     f"expected SIGKILL in save {n}, got exit {r.returncode}")
    run_dir = only_run(out)
    torn = [p.name for p in run_dir.glob(".checkpoint*.tmp")]
    trial = _finish(run_dir, expected, t0, f"killed in checkpoint write {n} (temp files left: {len(torn)})")
    left = [p.name for p in run_dir.glob(".checkpoint*.tmp")]
    trial.held = trial.held and bool(torn) and not left
    trial.detail += f"; temp files after the next start: {len(left)}"
    return trial


def disk_full(work: Path, rng: random.Random) -> Trial:
    """Checkpoint writes fail (file-size limit on the child): the run stops with a message, exit 1,
    the previous checkpoint stays intact and loadable."""
    import resource
    out = work / f"full-{rng.random():.6f}"
    r = run_cli(*train_args(out), fault="kill_at:10")  # checkpoints at steps 4 and 8 exist
    run_dir = only_run(out)
    before = file_sha256(run_dir / LAST)
    size = (run_dir / LAST).stat().st_size

    def limit():  # the child may write small files (logs) but no checkpoint
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death by SIGXFSZ
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))
    t0 = time.perf_counter()
    r = run_cli(*resume_args(run_dir), preexec_fn=limit)
    seconds = time.perf_counter() - t0
    msg = (r.stdout + r.stderr).strip().splitlines()
    error = next((ln for ln in msg if ln.startswith("error:")), "")
    intact = file_sha256(run_dir / LAST) == before and load_checkpoint(run_dir)["step_in_epoch"] == 8
    held = r.returncode == 1 and "could not write" in error and "last good checkpoint" in error and intact
    return Trial(held, seconds, f"exit {r.returncode} after {seconds:.1f}s (start-up included); "
                                f"previous checkpoint intact: {intact}; message: {error[:160]}")


def sigterm_to_group(work: Path, rng: random.Random) -> Trial:
    """SIGTERM to the whole process group (main + DataLoader worker) at a random moment of training:
    exit 143 within one step plus 2 s, checkpoint at the last completed step, resume identical."""
    expected = reference(work, *WORKERS)
    out = work / f"term-{rng.random():.6f}"
    p = start_cli(*train_args(out, *WORKERS, "--print-freq", "1"), start_new_session=True)
    wanted = rng.randint(2, STEPS_PER_EPOCH * EPOCHS - 3)
    seen, step_times = 0, []
    for line in p.stdout:
        if "step " in line and "/" in line:
            seen += 1
            step_times.append(time.perf_counter())
            if seen >= wanted:
                break
    t_signal = time.perf_counter()
    os.killpg(p.pid, signal.SIGTERM)
    rest, _ = p.communicate(timeout=120)
    took = time.perf_counter() - t_signal
    step_s = max(b - a for a, b in zip(step_times, step_times[1:])) if len(step_times) > 1 else 1.0
    run_dir = only_run(out)
    done = checkpointed_step(run_dir)
    ok = p.returncode == 143 and took <= step_s + 2 and done >= wanted
    trial = _finish(run_dir, expected, t_signal,
                    f"SIGTERM to the group after step {wanted}: exit {p.returncode} "
                    f"in {took:.2f}s (one step {step_s:.2f}s), checkpoint at step {done}")
    trial.held = trial.held and ok
    return trial


def nan_at_step(work: Path, rng: random.Random) -> Trial:
    """A NaN loss at step k is skipped: the model after k equals the model after k-1, and no
    checkpoint holds a non-finite value."""
    k = rng.randint(2, STEPS_PER_EPOCH - 2)
    t0 = time.perf_counter()
    a, b = work / f"nan-{k}-{rng.random():.6f}", work / f"clean-{k}-{rng.random():.6f}"
    # kill_at:N fires after step N, before that step's checkpoint: the last checkpoints are k and k-1
    ra = run_cli(*train_args(a, "--checkpoint-every", 1), fault=f"nan_at:{k},kill_at:{k + 1}")
    rb = run_cli(*train_args(b, "--checkpoint-every", 1), fault=f"kill_at:{k}")
    if ra.returncode != -signal.SIGKILL or rb.returncode != -signal.SIGKILL:
        return Trial(False, time.perf_counter() - t0, f"runs ended {ra.returncode}, {rb.returncode}")
    ca, cb = load_checkpoint(only_run(a)), load_checkpoint(only_run(b))
    same = all(torch.equal(ca["model"][n], cb["model"][n]) for n in cb["model"])
    finite = all(not non_finite_keys(load_checkpoint(p)) for p in only_run(a).glob("checkpoint-*.pt"))
    return Trial(same and finite and ca["step_in_epoch"] == k,
                 time.perf_counter() - t0,
                 f"NaN at step {k}: model equals the one after step {k - 1}: {same}; checkpoints finite: "
                 f"{finite}")


def malicious_checkpoint(work: Path, rng: random.Random) -> Trial:
    """A checkpoint whose unpickling would run code: refused by name, the code never runs."""
    folder = work / f"evil-{rng.random():.6f}"
    folder.mkdir(parents=True)
    marker = folder / "MARKER"
    code = ("import os, torch\n"
            "class Evil:\n"
            f"    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
            f"torch.save({{'model': Evil()}}, {str(folder / 'evil.pt')!r})\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=cli_env())
    t0 = time.perf_counter()
    r = run_cli("eval", folder / "evil.pt")
    said = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    held = r.returncode != 0 and "posix.system" in said and "refused to load" in said and not marker.exists()
    return Trial(held, time.perf_counter() - t0,
                 f"exit {r.returncode}, marker absent: {not marker.exists()}; {said[:160]}")


def manifest_vouches(run_dir: Path) -> bool:
    """The chosen checkpoint's hash is in the manifest (used by tests after any scenario)."""
    return file_sha256(run_dir / LAST) in {e["sha256"] for e in read_manifest(run_dir)}



# --shutdown-timeout: torchrun gives surviving ranks this long after SIGTERM before SIGKILL (default
# 30 s); a stopped (hung) rank never handles SIGTERM, so this bounds how long a hung job lingers.
TORCHRUN = ["--nproc_per_node=2", "--shutdown-timeout", "2"]


def _tagged_pids(tag: str) -> list[int]:
    """Processes whose environment carries ``tag`` (torchrun's workers may sit in their own sessions)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if tag.encode() in (d / "environ").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def _ddp_fault(work: Path, rng: random.Random, fault: str, *extra) -> tuple[Trial, Path]:
    """Run a 2-process job with ``fault`` on rank 1; time from the faulty step to the last process gone."""
    step = rng.randint(2, STEPS_PER_EPOCH // 2 - 1)  # in the first epoch: 2 ranks make 8 steps an epoch each
    out = work / f"ddp-{fault}-{step}-{rng.random():.6f}"
    tag = f"SOTAKIT_TRIAL={out.name}"
    p = start_cli(*train_args(out, "--print-freq", "1", *extra), torchrun=TORCHRUN, fault=f"{fault}:{step}",
                  env={"SOTAKIT_FAULT_RANK": "1", "SOTAKIT_TRIAL": out.name})
    # The fault strikes right after rank 1's step N; rank 0 logs its steps (they all-reduce, so they
    # move together) unless the fault breaks that step's collectives first: the time of the last
    # step rank 0 logged up to N is when the fault struck, within one step.
    t_fault, lines = None, []
    logged = re.compile(rf"epoch 1/\d+ step ({'|'.join(str(k) for k in range(1, step + 1))})/")
    for line in p.stdout:
        lines.append(line)
        if logged.search(line):
            t_fault = time.perf_counter()
    p.wait()
    while _tagged_pids(tag):
        time.sleep(0.05)
    gone = time.perf_counter() - (t_fault or time.perf_counter())
    detail = f"{fault} on rank 1 after step {step}: exit {p.returncode}, every process gone {gone:.1f}s later"
    return Trial(p.returncode != 0 and t_fault is not None, gone, detail), only_run(out)


def ddp_rank_killed(work: Path, rng: random.Random) -> Trial:
    """One of two gloo ranks is SIGKILLed: the job ends within 15 s; relaunching resumes identically."""
    expected = _ddp_reference(work)
    trial, run_dir = _ddp_fault(work, rng, "kill_at")
    trial.held = trial.held and trial.seconds <= 15
    return _ddp_relaunch(run_dir, expected, trial)


def ddp_rank_hung(work: Path, rng: random.Random) -> Trial:
    """One rank stops (SIGSTOP) with --dist-timeout 10: the job ends within 15 s; relaunch identical."""
    expected = _ddp_reference(work)
    trial, run_dir = _ddp_fault(work, rng, "hang_at", "--dist-timeout", "10")
    trial.held = trial.held and trial.seconds <= 15
    return _ddp_relaunch(run_dir, expected, trial)


def _ddp_reference(work: Path) -> str:
    if "ddp" not in _REFERENCE:
        out = work / "ddp-reference"
        r = run_cli(*train_args(out), torchrun=TORCHRUN)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        _REFERENCE["ddp"] = fingerprint(only_run(out))
    return _REFERENCE["ddp"]


def _ddp_relaunch(run_dir: Path, expected: str, trial: Trial) -> Trial:
    r = run_cli(*resume_args(run_dir), torchrun=TORCHRUN)
    same = r.returncode == 0 and fingerprint(run_dir) == expected
    trial.held = trial.held and same
    trial.detail += f"; relaunched: {'identical' if same else 'DIFFERENT or failed: ' + r.stdout[-200:]}"
    return trial


def kill_at_random_step_with_worker(work: Path, rng: random.Random) -> Trial:
    """As kill_at_random_step, on the per-image path with a DataLoader worker, TrivialAugment, erasing
    and MixUp: exact only because every sample's augmentation is seeded by its position."""
    return kill_at_random_step(work, rng, *WORKERS)


FAST_TIER = [kill_at_random_step, kill_at_random_step_with_worker, kill_during_save, disk_full,
             sigterm_to_group, nan_at_step, malicious_checkpoint, ddp_rank_killed, ddp_rank_hung]


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _worker_fault(work: Path, rng: random.Random, fault: str) -> Trial:
    """Break the DataLoader worker at a random moment; the run must fail with a message naming the
    data loading and the last checkpoint, which stays verified."""
    out = work / f"worker-{fault}-{rng.random():.6f}"
    p = start_cli(*train_args(out, *WORKERS, "--print-freq", "1", "--loader-timeout", "5"),
                  fault=f"hang_in_load:{rng.randint(200, 400)}" if fault == "hang" else "")
    wanted, seen, t_ref, lines = rng.randint(5, STEPS_PER_EPOCH - 2), 0, None, []
    for line in p.stdout:  # to the end; t_ref: the kill, or the last step before the stall
        lines.append(line)
        if "step " in line and "/" in line:
            seen += 1
            if fault == "hang":
                t_ref = time.perf_counter()
            elif seen == wanted:
                t_ref = time.perf_counter()
                for w in _children(p.pid):
                    os.kill(w, signal.SIGKILL)
    p.wait(timeout=120)
    took = time.perf_counter() - (t_ref or time.perf_counter())
    rest = "".join(lines)
    error = next((ln for ln in rest.splitlines() if ln.startswith("error:")), "")
    run_dir = only_run(out)
    intact = manifest_vouches(run_dir) if (run_dir / LAST).exists() else False
    held = p.returncode == 1 and "data loading failed" in error and "last good checkpoint" in error and intact
    what = f"worker SIGKILLed after step {wanted}" if fault == "kill" else \
        "a worker's image load blocked (--loader-timeout 5)"
    return Trial(held, took, f"{what}: exit {p.returncode} {took:.1f}s after the last step; checkpoint "
                             f"verified: {intact}; {error[:150]}")


def worker_killed(work: Path, rng: random.Random) -> Trial:
    """The DataLoader worker is SIGKILLed: the run stops at once with a clear error, the last checkpoint
    intact."""
    return _worker_fault(work, rng, "kill")


def worker_hung(work: Path, rng: random.Random) -> Trial:
    """A worker's image load blocks forever (hang_in_load) with --loader-timeout 5: a clear error after the
    timeout, the last checkpoint intact."""
    return _worker_fault(work, rng, "hang")


FAST_TIER += [worker_killed, worker_hung]


# ---------------------------------------------------------------------------------------------------------
# Issue 10: two writers at once, signals outside the training step, files a crash can tear, inputs that
# trained silently wrong or ended in a traceback. Each case is one command (or two, run together) and what
# it must end in: the exit code, the words it prints, the files it keeps. Deterministic: one trial each in
# the fast tier.

def _said(r) -> str:
    return (r.stdout or "") + (r.stderr or "")


def _no_traceback(text: str) -> bool:
    return "Traceback" not in text


def _case(held: bool, t0: float, detail: str) -> Trial:
    return Trial(held, time.perf_counter() - t0, detail)


def _first_line(text: str, start: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip().startswith(start)), "")


def _interrupted_run(work: Path, tag: str, at: int = 10, *extra) -> Path:
    """A run SIGKILLed after step ``at`` (checkpoints at 4 and 8): what a resume continues."""
    out = work / f"{tag}-{time.perf_counter_ns()}"
    r = run_cli(*train_args(out, *extra), fault=f"kill_at:{at}")
    assert r.returncode == -signal.SIGKILL, _said(r)[-2000:]
    return only_run(out)


def _step_records(run_dir: Path) -> list[tuple]:
    records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [(r["epoch"], r["step"]) for r in records if r.get("kind") == "step"]


def two_resumes_at_once(work: Path, rng: random.Random) -> Trial:
    """`train --resume R & sleep 0.3; train --resume R`: exactly one trains (the other exits 2 naming the
    first); metrics.jsonl has no step twice; the manifest's newest entry is the furthest step; the run ends
    identical to an uninterrupted one."""
    expected = reference(work)
    run_dir = _interrupted_run(work, "tworesume")
    t0 = time.perf_counter()
    a = start_cli(*resume_args(run_dir))
    time.sleep(0.3)
    b = run_cli(*resume_args(run_dir))
    out_a, _ = a.communicate(timeout=300)
    codes = sorted([a.returncode, b.returncode])
    steps = _step_records(run_dir)
    manifest = read_manifest(run_dir)
    newest = max(manifest, key=lambda e: e["time"])
    furthest = max(manifest, key=lambda e: (e["epoch"], e["step"]))
    same = (run_dir / "summary.json").is_file() and fingerprint(run_dir) == expected
    refusal = _first_line(_said(b) if b.returncode else out_a, "error:")
    held = (codes == [0, 2] and "is training it" in refusal and len(steps) == len(set(steps))
            and newest is furthest and same)
    return _case(held, t0, f"exits {codes}; refusal: {refusal[:150]}; duplicated step records: "
                           f"{len(steps) - len(set(steps))}; newest manifest entry is the furthest step: "
                           f"{newest is furthest}; final state identical: {same}")


def stale_pid_reused(work: Path, rng: random.Random) -> Trial:
    """A run.pid left by a killed run whose PID now belongs to another live program (start time differs;
    an old-format run.pid: its command line is not sotakit's) does not block the resume: exit 0."""
    run_dir = _interrupted_run(work, "stalepid")
    other = subprocess.Popen(["sleep", "60"])
    t0 = time.perf_counter()
    try:
        (run_dir / "run.pid").write_text(json.dumps({"pid": other.pid, "host": os.uname().nodename,
                                                     "started": 1}))
        r1 = run_cli(*resume_args(run_dir), "--epochs", "3")
        (run_dir / "run.pid").write_text(json.dumps({"pid": other.pid, "host": os.uname().nodename}))
        r2 = run_cli(*resume_args(run_dir), "--epochs", "4")
    finally:
        other.kill()
        other.wait()
    held = r1.returncode == 0 and r2.returncode == 0 and json.loads(
        (run_dir / "summary.json").read_text())["epochs"] == 4
    return _case(held, t0, f"run.pid naming a live `sleep` (other start time): exit {r1.returncode}; "
                           f"old-format run.pid naming it: exit {r2.returncode}")


SWEEP = ["--recipe", "fashion-mnist-demo", "--data", "fashion-mnist", "--model", "resnet9_w16",
         "--train-limit", "256", "--test-limit", "100", "-b", "32", "--seeds", "1", "--no-estimate",
         "--device", "cpu", "--use-deterministic-algorithms"]


def two_sweeps_one_dir(work: Path, rng: random.Random) -> Trial:
    """Two `sotakit sweep ... --out D` started a second apart: the second exits 2 naming the first; every
    (configuration, seed) trains and is recorded once (n = 1), also after a duplicated record is added."""
    out = work / f"sweep2-{time.perf_counter_ns()}"
    args = ["sweep", *SWEEP, "--grid", "lr=0.05,0.1", "--epochs", "1", "--out", out]
    t0 = time.perf_counter()
    a = start_cli(*args)
    # Start the second once the first holds the lock (its pid is in the lock file): a fixed head start
    # loses the race on a loaded machine, where the imports alone take longer than it.
    lock, deadline = out / EXPERIMENT_LOCK, time.monotonic() + 120
    while (a.poll() is None and time.monotonic() < deadline
           and f"process {a.pid} " not in (lock.read_text() if lock.is_file() else "")):
        time.sleep(0.05)
    b = run_cli(*args)
    said_a, _ = a.communicate(timeout=600)
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines + lines[:1]) + "\n")  # as two writers left it
    c = run_cli(*args)
    table = (out / "sweep.md").read_text()
    runs = list((out / "runs").iterdir())
    refusal = _first_line(_said(b), "error:")
    ns = re.findall(r"\| (\d+) \| \d", table)
    held = (a.returncode == 0 and b.returncode == 2 and "is in use by process" in refusal
            and c.returncode == 0 and len(lines) == 2 and len(runs) == 2 and ns == ["1", "1"]
            and "0 runs to do" in _said(c))
    return _case(held, t0, f"first exit {a.returncode}, second exit {b.returncode} ({refusal[:120]}); "
                           f"records {len(lines)}, run folders {len(runs)}; n per point after a duplicated "
                           f"record: {ns}")


def _until_stopped(p, lines: list[str], t_signal: float) -> tuple[float, float]:
    """Read ``p`` to its end; (seconds from the signal to its "stopped ..." line, printed once the state is
    written, and to the process's exit). The exit adds the interpreter's teardown, which on a busy machine
    alone can take a second or two."""
    took = None
    for line in p.stdout:
        lines.append(line)
        if took is None and line.startswith("stopped"):
            took = time.perf_counter() - t_signal
    p.wait(timeout=120)
    gone = time.perf_counter() - t_signal
    return (took if took is not None else gone), gone


def _eval_stop(work: Path, wait_for: str, sig: int, *, resume_epochs: int = 2, said: str = "during the "
               ) -> tuple[Trial, Path]:
    """Send ``sig`` 0.3 s after a line containing ``wait_for`` is printed (inside the evaluation that follows,
    slowed to 0.4 s a batch); the run must stop there (its message has ``said``) within one batch plus 2 s
    and resume to the uninterrupted state."""
    expected = reference(work)
    out = work / f"evalstop-{sig}-{time.perf_counter_ns()}"
    p = start_cli(*train_args(out), fault="eval_delay_ms:400")
    lines = []
    for line in p.stdout:
        lines.append(line)
        if wait_for in line:
            break
    time.sleep(0.3)
    t_signal = time.perf_counter()
    p.send_signal(sig)
    took, gone = _until_stopped(p, lines, t_signal)
    where, said = said, "".join(lines)
    run_dir = only_run(out)
    stopped = _first_line(said, "stopped")
    pid_gone = not (run_dir / "run.pid").exists()
    ok = p.returncode == 128 + (sig if sig == signal.SIGINT else signal.SIGTERM) and took <= 0.4 + 2 \
        and _no_traceback(said) and pid_gone and where in stopped
    r = run_cli(*resume_args(run_dir))
    epochs = [x for x in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
              if x.get("kind") == "epoch"]
    same = r.returncode == 0 and fingerprint(run_dir) == expected and len(epochs) == resume_epochs
    return _case(ok and same, t_signal, f"exit {p.returncode}, stopped with its checkpoint {took:.2f}s after "
                                        f"the signal (process gone after {gone:.2f}s); {stopped[:140]}; "
                                        f"run.pid dropped: {pid_gone}; resumed: exit {r.returncode}, "
                                        f"{len(epochs)} epoch records, "
                                        f"{'identical' if same else 'DIFFERENT'}"), run_dir


def sigterm_in_epoch_evaluation(work: Path, rng: random.Random) -> Trial:
    """SIGTERM during the evaluation after epoch 1 (0.4 s a batch): exit 143 within one batch plus 2 s, the
    epoch's training kept, its evaluation redone on resume; resumed run identical, each epoch logged once."""
    return _eval_stop(work, "epoch 1/2 step 16/16", signal.SIGTERM)[0]


def sigterm_in_last_epoch(work: Path, rng: random.Random) -> Trial:
    """SIGTERM during the last epoch's evaluation (today: ignored, exit 0): exit 143 within one batch plus
    2 s, no summary.json; the resume evaluates and finishes; identical."""
    return _eval_stop(work, "epoch 2/2 step 16/16", signal.SIGTERM,
                      said="during the evaluation after epoch 2")[0]


def sigterm_in_final_evaluation(work: Path, rng: random.Random) -> Trial:
    """SIGTERM during the final evaluation (today: default handler, no message): exit 143 within one batch
    plus 2 s with a message, every epoch saved; the resume only evaluates; identical."""
    return _eval_stop(work, "epoch 2/2 train loss", signal.SIGTERM, said="during the final evaluation")[0]


def sigint_in_evaluation(work: Path, rng: random.Random) -> Trial:
    """Ctrl-C (SIGINT) during an evaluation: exit 130 within one batch plus 2 s, resume identical."""
    return _eval_stop(work, "epoch 1/2 step 16/16", signal.SIGINT)[0]


def sigusr1_in_evaluation(work: Path, rng: random.Random) -> Trial:
    """SIGUSR1 (SLURM's early warning) during an evaluation: exit 143 within one batch plus 2 s, resume
    identical."""
    return _eval_stop(work, "epoch 1/2 step 16/16", signal.SIGUSR1)[0]


def sighup_mid_epoch(work: Path, rng: random.Random) -> Trial:
    """SIGHUP (ssh session closed) after a random step (today: killed at once, no checkpoint): exit 143
    within one step plus 2 s, a checkpoint at the step reached, resume identical."""
    expected = reference(work)
    wanted = rng.randint(2, STEPS_PER_EPOCH * EPOCHS - 3)
    out = work / f"hup-{wanted}-{time.perf_counter_ns()}"
    # SIGHUP at its default in the child even when the suite itself runs under nohup (which sotakit honours)
    p = start_cli(*train_args(out, "--print-freq", "1"),
                  preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    seen = 0
    for line in p.stdout:
        if "step " in line and "/" in line:
            seen += 1
            if seen >= wanted:
                break
    t0 = time.perf_counter()
    p.send_signal(signal.SIGHUP)
    lines = []
    took, gone = _until_stopped(p, lines, t0)
    run_dir = only_run(out)
    done = checkpointed_step(run_dir)
    ok = p.returncode == 143 and took <= 1 + 2 and done >= wanted and "stopped (SIGHUP)" in "".join(lines)
    trial = _finish(run_dir, expected, t0,
                    f"SIGHUP after step {wanted}: exit {p.returncode}, stopped with its checkpoint in "
                    f"{took:.2f}s (gone {gone:.2f}s), checkpoint at step {done}")
    trial.held = trial.held and ok
    return trial


def second_ctrl_c(work: Path, rng: random.Random) -> Trial:
    """Two Ctrl-C 0.2 s apart during a slow evaluation (2 s a batch): exit 130 at once (well within the
    batch), the last checkpoint kept and verified."""
    out = work / f"ctrlc2-{time.perf_counter_ns()}"
    p = start_cli(*train_args(out), fault="eval_delay_ms:2000")
    for line in p.stdout:
        if "epoch 1/2 step 16/16" in line:
            break
    time.sleep(0.3)
    t0 = time.perf_counter()
    p.send_signal(signal.SIGINT)
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    rest, _ = p.communicate(timeout=60)
    took = time.perf_counter() - t0
    run_dir = only_run(out)
    kept = manifest_vouches(run_dir)
    held = p.returncode == 130 and took < 1.5 and kept and "second Ctrl-C" in rest
    return _case(held, t0, f"exit {p.returncode} {took:.2f}s after the first Ctrl-C; checkpoint verified: "
                           f"{kept}")


def sigterm_during_start(work: Path, rng: random.Random) -> Trial:
    """SIGTERM while the run starts (data load, model build): exit 143 within 2 s, a message, no traceback."""
    out = work / f"termstart-{time.perf_counter_ns()}"
    p = start_cli(*train_args(out))
    for line in p.stdout:
        if line.startswith("note:"):  # printed once the data is loaded
            break
    t0 = time.perf_counter()
    p.send_signal(signal.SIGTERM)
    lines = []
    took, _ = _until_stopped(p, lines, t0)
    rest = "".join(lines)
    held = p.returncode == 143 and took <= 2 and "stopped (SIGTERM)" in rest and _no_traceback(rest)
    return _case(held, t0, f"exit {p.returncode} {took:.2f}s after the signal; "
                           f"{_first_line(rest, 'stopped')[:120]}")


def _tagged(tag: str) -> list[int]:
    return [p for p in _tagged_pids(tag) if p != os.getpid()]


def sweep_sigterm_resumes(work: Path, rng: random.Random) -> Trial:
    """SIGTERM to `sotakit sweep` while its child trains (today: the child is orphaned and its result never
    recorded): the signal reaches the child, which checkpoints; the sweep exits 143 saying how to resume;
    no process is left; the same command then resumes that run in its folder (not a new one) and records it
    once."""
    out = work / f"sweepterm-{time.perf_counter_ns()}"
    tag = f"SOTAKIT_TRIAL={out.name}"
    args = ["sweep", *SWEEP, "--grid", "lr=0.05", "--epochs", "2", "--out", out, "--checkpoint-every", "2"]
    t0 = time.perf_counter()
    p = start_cli(*args, env={"SOTAKIT_TRIAL": out.name}, fault="eval_delay_ms:300")
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.glob("runs/*/checkpoint-last.pt")):
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    said, _ = p.communicate(timeout=120)
    time.sleep(0.5)
    left = _tagged(tag)
    run_dirs = list((out / "runs").iterdir())
    kept = bool(run_dirs) and (run_dirs[0] / "checkpoint-last.pt").exists()
    r = run_cli(*args)
    after = list((out / "runs").iterdir())
    records = (out / "results.jsonl").read_text().splitlines() if (out / "results.jsonl").exists() else []
    resumed = "resuming" in _said(r) or len(after) == 1
    held = (p.returncode == 143 and "re-run the same command" in said and not left and kept
            and r.returncode == 0 and len(after) == 1 and len(records) == 1 and resumed)
    return _case(held, t0, f"sweep exit {p.returncode}; processes left: {len(left)}; checkpoint kept: "
                           f"{kept}; "
                           f"re-run exit {r.returncode}, run folders {len(after)}, records {len(records)}; "
                           f"{_first_line(said, 'error:')[:140]}")


def _mount_tmpfs(path: Path, size: str = "40m") -> str | None:
    """A real small file system at ``path`` (root only); None when mounted, else the reason it is not."""
    if os.geteuid() != 0:
        return "not root: a real full disk needs a tmpfs mount (disk_full covers EFBIG, a file-size limit)"
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    return None if r.returncode == 0 else f"mount failed: {r.stderr.strip()}"


def _full_disk(work: Path, at: int) -> Trial:
    expected = reference(work, "--print-freq", "1")
    mnt = work / f"tmpfs-{at}-{time.perf_counter_ns()}"
    why = _mount_tmpfs(mnt)
    if why:
        return Trial(True, 0.0, f"SKIPPED: {why}")
    try:
        out = mnt / "out"
        t0 = time.perf_counter()
        r = run_cli(*train_args(out, "--print-freq", "1"), fault=f"fill_disk_at:{at}",
                    env={"SOTAKIT_FAULT_FILL": str(mnt / "filler")})
        said = _said(r)
        run_dir = only_run(out)
        error = _first_line(said, "error:")
        failed = (run_dir / "failed.json").is_file() and "space" in (run_dir / "failed.json").read_text()
        pid_gone = not (run_dir / "run.pid").exists()
        kept = manifest_vouches(run_dir)
        ok = (r.returncode == 1 and _no_traceback(said) and ("No space" in error or "free space" in error)
              and "last good checkpoint" in error and failed and pid_gone and kept)
        (mnt / "filler").unlink()
        trial = _finish(run_dir, expected, t0,
                        f"disk filled after step {at}: exit {r.returncode}, traceback: "
                        f"{not _no_traceback(said)}, "
                        f"failed.json: {failed}, run.pid dropped: {pid_gone}, checkpoint verified: {kept}; "
                        f"{error[:170]}")
        trial.held = trial.held and ok
        return trial
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def full_disk_mid_epoch(work: Path, rng: random.Random) -> Trial:
    """A real full disk (40 MB tmpfs, filled after step 6) under metrics.jsonl, the TensorBoard events and
    the checkpoints: exit 1 with one `error:` line naming the file and the last good checkpoint, no
    traceback, failed.json written, run.pid dropped; once space is freed the resume ends identical."""
    return _full_disk(work, 6)


def full_disk_at_the_end(work: Path, rng: random.Random) -> Trial:
    """As full_disk_mid_epoch, the disk filled after the last step (epoch-end, final and summary writes)."""
    return _full_disk(work, STEPS_PER_EPOCH * EPOCHS)


def metrics_write_fails(work: Path, rng: random.Random) -> Trial:
    """The metrics.jsonl append fails (file-size limit just above its size: EFBIG, as ENOSPC would): exit 1
    with one `error:` line naming metrics.jsonl and the last good checkpoint, no traceback, failed.json,
    run.pid dropped, no torn line left; the resume ends identical."""
    import resource
    expected = reference(work, "--print-freq", "1")
    run_dir = _interrupted_run(work, "metricsfull", 10, "--print-freq", "1")
    kept = [ln for ln in (run_dir / "metrics.jsonl").read_text().splitlines()[:8]]
    limit = sum(len(ln) + 1 for ln in kept) + 400  # the resume trims to step 8, then ~2 records fit

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death by SIGXFSZ
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    t0 = time.perf_counter()
    r = run_cli(*resume_args(run_dir), preexec_fn=small_files)
    said = _said(r)
    error = _first_line(said, "error:")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    whole = all(ln.endswith("}") for ln in lines)
    failed = (run_dir / "failed.json").is_file()
    pid_gone = not (run_dir / "run.pid").exists()
    ok = (r.returncode == 1 and "metrics.jsonl" in error and "File too large" in error
          and "last good checkpoint" in error and _no_traceback(said) and whole and failed and pid_gone)
    trial = _finish(run_dir, expected, t0, f"exit {r.returncode}, traceback: {not _no_traceback(said)}, "
                                           f"lines whole: {whole}, failed.json: {failed}, run.pid dropped: "
                                           f"{pid_gone}; {error[:170]}")
    trial.held = trial.held and ok
    return trial


def torn_metrics_line(work: Path, rng: random.Random) -> Trial:
    """A torn last line in metrics.jsonl (today: `Unterminated string` naming no file blocks --resume,
    `runs` and `report`): resume, `runs` and `report` exit 0, each warning with the file named; the resumed
    run ends identical."""
    expected = reference(work)
    run_dir = _interrupted_run(work, "torn")
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"kind": "step", "epoch": 0, "step": 9, "loss": "2.1')
    t0 = time.perf_counter()
    r1 = run_cli(*resume_args(run_dir))
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"kind": "step", "epoch": 1, "lo')
    r2 = run_cli("runs", "--root", run_dir.parent)
    r3 = run_cli("report", run_dir)
    named = all(str(run_dir / "metrics.jsonl") in r.stderr for r in (r1, r2, r3))
    same = r1.returncode == 0 and fingerprint(run_dir) == expected
    held = same and r2.returncode == 0 and r3.returncode == 0 and named
    return _case(held, t0, f"resume exit {r1.returncode} ({'identical' if same else 'DIFFERENT'}), runs exit "
                           f"{r2.returncode}, report exit {r3.returncode}; file named in each warning: "
                           f"{named}; "
                           f"{_first_line(r2.stderr, 'warning:')[:150]}")


def damaged_run_in_listing(work: Path, rng: random.Random) -> Trial:
    """Three runs, one with a garbage recipe.toml and one with a torn summary.json (today: the whole
    `sotakit runs` listing fails): exit 0, all three listed, each damaged file named in a warning."""
    root = work / f"listing-{time.perf_counter_ns()}"
    src = reference_run(work)  # not "reference-0": which configuration trained first depends on the order
    import shutil
    for name in ("a", "b", "c"):
        shutil.copytree(src, root / "runs" / f"20260101-00000{ord(name) - 97}-{name}")
    runs = sorted((root / "runs").iterdir())
    (runs[1] / "recipe.toml").write_text("[recipe\nmodel = = 3\n")
    (runs[2] / "summary.json").write_text('{"test": {"acc1": 5')
    t0 = time.perf_counter()
    r = run_cli("runs", "--root", root)
    listed = sum(name in r.stdout for name in ("-a ", "-b ", "-c "))
    named = str(runs[1] / "recipe.toml") in r.stderr and str(runs[2] / "summary.json") in r.stderr
    held = r.returncode == 0 and listed == 3 and named and _no_traceback(_said(r))
    return _case(held, t0, f"exit {r.returncode}, runs listed {listed}/3, damaged files named: {named}")


def garbage_manifest_damaged_last(work: Path, rng: random.Random) -> Trial:
    """checkpoints.json garbage (and, second time, of the wrong shape) with checkpoint-last.pt truncated
    (today: resume fails; a wrong-shape manifest gives a traceback): the resume loads checkpoint-prev.pt,
    says so, and ends identical. The fast tier tries one of the three manifests (drawn), the full all."""
    expected = reference(work)
    results = []
    t0 = time.perf_counter()
    manifests = ["\x00garbage{", json.dumps({"checkpoints": 5}), json.dumps([{"sha": 1}])]
    for manifest in manifests if THOROUGH else [rng.choice(manifests)]:
        run_dir = _interrupted_run(work, "manifest")
        (run_dir / "checkpoints.json").write_text(manifest)
        last = run_dir / LAST
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])
        r = run_cli(*resume_args(run_dir))
        same = r.returncode == 0 and fingerprint(run_dir) == expected
        said = "checkpoint-prev.pt instead" in r.stderr
        results.append((r.returncode, same, said, _no_traceback(_said(r))))
    held = all(code == 0 and same and said and clean for code, same, said, clean in results)
    return _case(held, t0, f"(exit, identical, said, no traceback) per manifest: {results}")


# Inputs: folders made here, trained for one epoch (or refused before training).

def make_folder(root: Path, classes: dict[str, int], *, val: dict[str, int] | None = None, size: int = 16,
                seed: int = 0) -> Path:
    """train/<class>/*.png and val/<class>/*.png, each class its own colour (learnable), ``size`` px."""
    from PIL import Image
    r = random.Random(seed)
    val = val or {c: max(1, n // 4) for c, n in classes.items()}
    for split, counts in (("train", classes), ("val", val)):
        for k, (c, n) in enumerate(counts.items()):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                colour = tuple(min(255, 40 * k + r.randrange(30)) for _ in range(3))
                Image.new("RGB", (size, size), colour).save(d / f"{i}.png")
    return root


def folder_args(data: Path, out: Path, *extra) -> list:
    return ["train", "--data", data, "--model", "resnet9_w16", "--epochs", "1", "-b", "8", "--device", "cpu",
            "--output-dir", out, *extra]


def _refused(r, words: str, t0: float, what: str, code: int = 2) -> Trial:
    said = _said(r)
    error = _first_line(said, "error:")
    held = r.returncode == code and words in error and _no_traceback(said)
    return _case(held, t0, f"{what}: exit {r.returncode}; {error[:200]}")


def _folder(work: Path, name: str, classes: dict[str, int], **kw) -> Path:
    return make_folder(work / f"{name}-{time.perf_counter_ns()}", classes, **kw)


def holdout_rounds_to_zero(work: Path, rng: random.Random) -> Trial:
    """`--holdout 0.001` of 256 images rounds to 0 (today: the best checkpoint silently chosen on the test
    split): exit 2, the fraction to use said, no run folder."""
    out = work / f"holdout0-{time.perf_counter_ns()}"
    t0 = time.perf_counter()
    r = run_cli(*train_args(out, "--train-limit", "256", "--holdout", "0.001"))
    trial = _refused(r, "is 0 images", t0, "--holdout 0.001 of 256 images")
    trial.held = trial.held and not list(out.glob("runs/*"))
    return trial


def hidden_folder_not_a_class(work: Path, rng: random.Random) -> Trial:
    """`.ipynb_checkpoints/` in train/ and val/ (today: class 0): skipped with a note; the run trains on the
    two real classes and exits 0."""
    data = _folder(work, "hidden", {"cat": 24, "dog": 24})
    for split in ("train", "val"):
        make_folder(data / "tmp", {"x": 2})
        (data / "tmp" / split / "x").rename(data / split / ".ipynb_checkpoints")
    out = work / f"{data.name}-out"
    t0 = time.perf_counter()
    r = run_cli(*folder_args(data, out))
    classes = load_checkpoint(only_run(out))["classes"] if r.returncode == 0 else None
    held = r.returncode == 0 and classes == ["cat", "dog"] and "hidden folders" in r.stderr
    return _case(held, t0, f"exit {r.returncode}; classes {classes}; "
                           f"{_first_line(r.stderr, 'note: hidden')[:140]}")


def one_class(work: Path, rng: random.Random) -> Trial:
    """A folder with one class (today: 100% accuracy without a word): exit 2, two classes asked for."""
    data = _folder(work, "oneclass", {"cat": 24})
    t0 = time.perf_counter()
    return _refused(run_cli(*folder_args(data, work / f"{data.name}-out")), "at least two class", t0,
                    "one class")


def holdout_leaves_class_unseen(work: Path, rng: random.Random) -> Trial:
    """`--holdout 0.5` with one image per class (today: classes wholly unseen in training): exit 2 naming
    how many classes have no training image."""
    data = _folder(work, "unseen", {c: 1 for c in "abcdef"})
    t0 = time.perf_counter()
    return _refused(run_cli(*folder_args(data, work / f"{data.name}-out", "--holdout", "0.5")),
                    "have no training image", t0, "--holdout 0.5, one image per class")


def one_image_training_set(work: Path, rng: random.Random) -> Trial:
    """A 1-image training set (today: its only batch dropped, a "finished" untrained run, exit 0): exit 2."""
    out = work / f"oneimage-{time.perf_counter_ns()}"
    t0 = time.perf_counter()
    return _refused(run_cli(*train_args(out, "--train-limit", "1")), "no training image", t0,
                    "--train-limit 1")


def start_epoch_past_end(work: Path, rng: random.Random) -> Trial:
    """`--start-epoch 2 --epochs 2` (today: a "finished" untrained run, exit 0): exit 2 before the data."""
    out = work / f"startepoch-{time.perf_counter_ns()}"
    t0 = time.perf_counter()
    return _refused(run_cli(*train_args(out, "--start-epoch", "2")), "start_epoch (2) must be below epochs",
                    t0, "--start-epoch 2 --epochs 2")


def typed_crop_size_kept(work: Path, rng: random.Random) -> Trial:
    """`--train-crop-size 28` on 28 px images (today: rescaled to 8 px by the small-image rule): trains at
    28, the note says "kept (given)"; the eval sizes still follow the rule."""
    out = work / f"cropsize-{time.perf_counter_ns()}"
    t0 = time.perf_counter()
    r = run_cli(*train_args(out, "--train-crop-size", "28", "--epochs", "1"))
    import tomllib
    recipe = tomllib.loads((only_run(out) / "recipe.toml").read_text())["recipe"] if r.returncode == 0 else {}
    held = (r.returncode == 0 and recipe.get("train_crop_size") == 28 and recipe.get("val_crop_size") == 28
            and "train crop 28 kept (given)" in r.stderr)
    return _case(held, t0, f"exit {r.returncode}; train crop {recipe.get('train_crop_size')}, val crop "
                           f"{recipe.get('val_crop_size')}; {_first_line(r.stderr, 'note: small')[:120]}")


def _folder_excludes(work: Path, name: str, make_bad, reason: str) -> Trial:
    data = _folder(work, name, {"cat": 24, "dog": 24})
    make_bad(data / "train" / "cat")
    out = work / f"{data.name}-out"
    t0 = time.perf_counter()
    r = run_cli(*folder_args(data, out))
    report = (only_run(out) / "data_report.csv").read_text() if r.returncode == 0 else ""
    bad = [ln for ln in report.splitlines() if ",excluded," in ln]
    held = (r.returncode == 0 and bool(bad) and all(f",excluded,{reason}," in ln for ln in bad)
            and _no_traceback(_said(r)))
    return _case(held, t0, f"exit {r.returncode}; excluded rows: {[ln.split(',')[0] for ln in bad]}; "
                           f"{bad[0].split(',')[4:6] if bad else ''}")


def dangling_symlink(work: Path, rng: random.Random) -> Trial:
    """A dangling symlink in a class folder (today: the whole load aborts with a bare [Errno 2]): listed as
    excluded (unreadable, "dangling symlink") in data_report.csv; the run trains, exit 0."""
    return _folder_excludes(work, "dangling", lambda d: (d / "gone.png").symlink_to(d / "nowhere.png"),
                            "unreadable")


def symlink_loop(work: Path, rng: random.Random) -> Trial:
    """A file symlink loop and a folder symlink back to its parent (today: an ELOOP traceback): the loop
    files excluded (unreadable), the folder walked once; the run trains, exit 0."""
    def make(d: Path):
        (d / "a.png").symlink_to(d / "b.png")
        (d / "b.png").symlink_to(d / "a.png")
        (d / "again").symlink_to(d)
    return _folder_excludes(work, "loop", make, "unreadable")


def non_utf8_class_name(work: Path, rng: random.Random) -> Trial:
    """A class folder whose name is not valid UTF-8 (today: an encoding error after the whole index pass,
    naming nothing): exit 2 naming the folder's bytes, before any file is read."""
    data = _folder(work, "utf8", {"cat": 4, "dog": 4})
    for split in ("train", "val"):
        os.rename(data / split / "dog", os.fsencode(data / split) + b"/caf\xe9")
    t0 = time.perf_counter()
    return _refused(run_cli(*folder_args(data, work / f"{data.name}-out")), "b'caf\\xe9'", t0,
                    "class folder b'caf\\xe9'")


def empty_class_folder(work: Path, rng: random.Random) -> Trial:
    """An empty class folder (today: torchvision's text naming no folder or split): exit 2 naming the
    folder and the split."""
    data = _folder(work, "emptyclass", {"cat": 8, "dog": 8})
    (data / "train" / "bird").mkdir()
    (data / "val" / "bird").mkdir()
    (data / "val" / "bird" / "0.png").write_bytes((data / "val" / "cat" / "0.png").read_bytes())
    t0 = time.perf_counter()
    return _refused(run_cli(*folder_args(data, work / f"{data.name}-out")),
                    f"{data / 'train' / 'bird'} (train split) is empty", t0, "empty train/bird")


def output_dir_unwritable(work: Path, rng: random.Random) -> Trial:
    """`--output-dir` that is a file, and (as root) one on a read-only mount (today: a traceback after the
    whole data load): exit 2 at once naming it, before the data is read."""
    t0 = time.perf_counter()
    afile = work / f"afile-{time.perf_counter_ns()}"
    afile.write_text("not a folder")
    cases = [("a file", afile)]
    ro = work / f"ro-{time.perf_counter_ns()}"
    mounted = False
    if os.geteuid() == 0:
        ro.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                                 capture_output=True).returncode == 0
        if mounted:
            cases.append(("read-only", ro))
    results = []
    try:
        for what, path in cases:
            r = run_cli(*train_args(path))
            error = _first_line(_said(r), "error:")
            results.append((what, r.returncode, "cannot hold runs" in error and str(path) in error
                            and "indexing" not in _said(r) and _no_traceback(_said(r))))
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(ro)], capture_output=True)
    held = all(code == 2 and ok for _, code, ok in results)
    skipped = "" if mounted else "; read-only mount SKIPPED (not root)"
    return _case(held, t0, f"(case, exit, named) {results}{skipped}")


def truncated_fashion_mnist(work: Path, rng: random.Random) -> Trial:
    """A truncated Fashion-MNIST file in --data-root (today: a gzip traceback): exit 2 naming the file and
    the remedy."""
    import shutil
    root = work / f"fmnist-torn-{time.perf_counter_ns()}" / "fashion-mnist"
    shutil.copytree(FMNIST, root)
    f = root / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    t0 = time.perf_counter()
    r = run_cli(*train_args(work / "unused", "--data-root", root.parent))
    return _refused(r, str(f), t0, "train-images-idx3-ubyte.gz cut in half")


def one_pixel_images(work: Path, rng: random.Random) -> Trial:
    """1 px images (today: a traceback after a full epoch, which is lost): exit 2 before training, naming the
    size the model needs and how to find one that fits."""
    data = _folder(work, "onepx", {"cat": 12, "dog": 12}, size=1)
    t0 = time.perf_counter()
    r = run_cli(*folder_args(data, work / f"{data.name}-out"))
    trial = _refused(r, "not 1x1", t0, "1x1 images")
    trial.held = trial.held and "step " not in _said(r)
    return trial


ISSUE10 = [two_resumes_at_once, stale_pid_reused, two_sweeps_one_dir, sigterm_in_epoch_evaluation,
           sigterm_in_last_epoch, sigterm_in_final_evaluation, sigint_in_evaluation, sigusr1_in_evaluation,
           sighup_mid_epoch, second_ctrl_c, sigterm_during_start, sweep_sigterm_resumes,
           full_disk_mid_epoch, full_disk_at_the_end, metrics_write_fails, torn_metrics_line,
           damaged_run_in_listing, garbage_manifest_damaged_last, holdout_rounds_to_zero,
           hidden_folder_not_a_class, one_class, holdout_leaves_class_unseen, one_image_training_set,
           start_epoch_past_end, typed_crop_size_kept, dangling_symlink, symlink_loop, non_utf8_class_name,
           empty_class_folder, output_dir_unwritable, truncated_fashion_mnist, one_pixel_images]
