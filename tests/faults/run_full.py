"""The full tier of the fault suite (`make faults`): each scenario of scenarios.py with the trial
counts the reliability promises name, written to docs/reliability.md with the command and machine.

Usage: python tests/faults/run_full.py [--trials-scale F] [--out docs/reliability.md]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # scenarios, cli_runner
import scenarios as s  # noqa: E402

s.THOROUGH = True  # every variant of a case, not one drawn

# (scenario, trials): the counts the promises name (issue 3)
FULL_TIER = [(s.kill_at_random_step, 10), (s.kill_at_random_step_with_worker, 10), (s.kill_during_save, 3),
             (s.disk_full, 3), (s.sigterm_to_group, 5), (s.nan_at_step, 3), (s.malicious_checkpoint, 3),
             (s.ddp_rank_killed, 5), (s.ddp_rank_hung, 5), (s.worker_killed, 3), (s.worker_hung, 3)]
# Issue 10's cases: deterministic, one trial each; the signals outside the training step three.
FULL_TIER += [(case, 3 if case in (s.sigterm_in_epoch_evaluation, s.sigterm_in_final_evaluation,
                                   s.sighup_mid_epoch) else 1) for case in s.ISSUE10]


# Faults tested in-process by pytest (decoding and downloads): run as they are, results counted.
PYTEST_FAULTS = [("bad images", "tests/faults/test_bad_images.py",
                  "300 good images with 36 odd or broken files of 12 kinds: every broken file reported with "
                  "its reason, every odd one loaded with the right pixels, no crash; a file broken mid-run "
                  "replaced and counted; past --max-decode-errors the run stops naming the flag"),
                 ("downloads", "tests/faults/test_downloads.py",
                  "a download killed midway resumes with an HTTP Range request for fewer bytes than the "
                  "file; a byte corrupted in flight never reaches the final path")]


def _outcome(t) -> str:
    return "skipped" if t.detail.startswith("SKIPPED") else "held" if t.held else "FAILED"


def _machine() -> str:
    import os
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                     if ln.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "cpu"
    return f"{platform.machine()}, {model}, {os.cpu_count()} cores"


def _pytest_rows() -> list[tuple[str, bool]]:
    """One table row per pytest file, and whether every test in it passed."""
    import re
    import subprocess
    rows = []
    for name, path, what in PYTEST_FAULTS:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path],
                           capture_output=True, text=True)
        passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", r.stdout)) else 0
        failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", r.stdout)) else 0
        print(f"{name}: {passed} passed, {failed} failed", flush=True)
        rows.append((f"| {name} (`{path}`) | {what} | {passed}/{passed + failed} tests | "
                     f"{time.perf_counter() - t0:.1f} s in all |", r.returncode == 0))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/reliability.md")
    p.add_argument("--trials-scale", type=float, default=1.0,
                   help="multiply every trial count (e.g. 0.3 for a quick look)")
    p.add_argument("--only", help="run only scenarios whose name contains this")
    args = p.parse_args()
    import torch
    rows, t_all = [], time.perf_counter()
    extra = [] if args.only else _pytest_rows()
    with tempfile.TemporaryDirectory(prefix="sotakit-faults-") as tmp:
        for scenario, n in FULL_TIER:
            if args.only and args.only not in scenario.__name__:
                continue
            n = max(1, round(n * args.trials_scale))
            rng = random.Random(f"{scenario.__name__}-full")
            trials = []
            for i in range(n):
                trials.append(scenario(Path(tmp), rng))
                print(f"{scenario.__name__} {i + 1}/{n}: {'held' if trials[-1].held else 'FAILED'} "
                      f"({trials[-1].seconds:.1f}s) {trials[-1].detail}", flush=True)
            rows.append((scenario, trials))
    lines = ["# Reliability: faults injected for real, and what held", "",
             f"Command: `make faults` (`python tests/faults/run_full.py`), {time.strftime('%Y-%m-%d')}, "
             f"{time.perf_counter() - t_all:.0f} s in all.",
             f"Machine: {_machine()}, Python {platform.python_version()}, "
             f"torch {torch.__version__}. Each trial runs `sotakit train` in subprocesses on 512 "
             "Fashion-MNIST images (resnet9_w16, 2 epochs of 16 steps, `--checkpoint-every 4`, "
             "deterministic algorithms, one thread); 'identical' compares SHA-256 fingerprints of model, "
             "EMA and optimizer state with an uninterrupted run. Times are medians over the trials.", "",
             "| fault | what was done and checked | held | median time |", "|---|---|---|---|"]
    for scenario, trials in rows:
        doc = " ".join((scenario.__doc__ or "").split())
        held = sum(t.held for t in trials)
        skipped = all(t.detail.startswith("SKIPPED") for t in trials)
        lines.append(f"| {scenario.__name__} | {doc} | {'skipped' if skipped else f'{held}/{len(trials)}'} | "
                     f"{statistics.median(t.seconds for t in trials):.1f} s |")
    lines += [row for row, _ in extra]
    lines += ["", "What the time column measures: for kills, from the fault to the end of the resumed run; "
                  "for SIGTERM, from the signal to the end of the resumed run (the exit itself is in the "
                  "details); for DDP, from the faulty step to the last process gone; for disk full, the "
                  "whole failing resume. Issue 10's cases (from two_resumes_at_once on): each is one command "
                  "(or two at once) checked for its exit code, its words and the files it keeps; the time is "
                  "from the command (for signals: from the signal) to the end of what the case checks, "
                  "resumes included; how soon a signal is honoured is in the details.", "",
              "## Details of each trial", ""]
    for scenario, trials in rows:
        lines += [f"- {scenario.__name__}:"] + [f"  - {_outcome(t)}: {t.detail}" for t in trials]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(t.held for _, ts in rows for t in ts) and all(ok for _, ok in extra) else 1


if __name__ == "__main__":
    sys.exit(main())
