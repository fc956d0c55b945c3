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
from sotakit.train.checkpoint import LAST, file_sha256, load_checkpoint, non_finite_keys, read_manifest

FMNIST = Path("/usr/share/datasets/fashion-mnist")
STEPS_PER_EPOCH, EPOCHS = 16, 2
BASE = ["--data", "fashion-mnist", "--model", "resnet9_w16", "--train-limit", "512", "--test-limit", "200",
        "-b", "32", "--epochs", str(EPOCHS), "--lr", "0.05", "--seed", "0", "--print-freq", "4",
        "--use-deterministic-algorithms", "--checkpoint-every", "4", "--device", "cpu"]
# The per-image path with a DataLoader worker, erasing and MixUp: per-sample and per-batch seeds.
WORKERS = ["--workers", "1", "--auto-augment", "ta_wide", "--random-erase", "0.25", "--mixup-alpha", "0.2"]


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


def fingerprint(run_dir: Path) -> str:
    return json.loads((run_dir / "summary.json").read_text())["state_fingerprint"]


_REFERENCE: dict[tuple, str] = {}


def reference(work: Path, *extra) -> str:
    """The fingerprint of an uninterrupted run (computed once per configuration)."""
    key = tuple(extra)
    if key not in _REFERENCE:
        out = work / f"reference-{len(_REFERENCE)}"
        r = run_cli(*train_args(out, *extra))
        assert r.returncode == 0, r.stderr[-2000:]
        _REFERENCE[key] = fingerprint(only_run(out))
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
    ck = load_checkpoint(run_dir)
    done = ck["epoch"] * STEPS_PER_EPOCH + ck["step_in_epoch"]
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
