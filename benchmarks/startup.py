"""Start-up on a 60,000-image folder: the first `sotakit train` (scan + data cache) and the second.

Run by hand (the machine should be otherwise idle):

    .venv/bin/python benchmarks/startup.py [--folder /tmp/sotakit-fmnist-png]

Builds, if absent, an ImageNet-layout folder of Fashion-MNIST as 28 px grayscale PNGs (60,000 train,
10,000 val, from /usr/share/datasets/fashion-mnist or wherever ``load_data`` finds it), then starts
``sotakit train`` twice on it with a fresh cache directory ($XDG_CACHE_HOME) and a tiny step budget
(``--epochs 1 --train-limit 256 --test-limit 256``, one step line per step). For each run it reports the
time from the process start to the first step line on stderr (the first step's compute included) and
the whole process; for the first run also the index scan and the data-cache build as the run logged
them. Issue 14's target: the second run reaches its first step within 5 s.

Writes benchmarks/results/startup-<machine>-torch<version>.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from sotakit.experiments.bench import machine_tag
from sotakit.train.machine import cpu_name

STEP_LINE = re.compile(r" step \d+/\d+ ")
BANNER_LINE = re.compile(r"^run: ")  # printed by fit() just before the training loop starts
TRAIN = ["--model", "resnet9_w16", "--device", "cpu", "--epochs", "1", "--batch-size", "64",
         "--train-limit", "256", "--test-limit", "256", "--print-freq", "1", "--workers", "0"]


def make_folder(root: Path) -> None:
    """Fashion-MNIST as PNG files: train/<class>/<i>.png and val/<class>/<i>.png (skipped if present)."""
    if (root / "DONE").exists():
        return
    from sotakit.data import load_data
    bundle = load_data("fashion-mnist")
    t0 = time.perf_counter()
    for split, source in (("train", bundle.train), ("val", bundle.test)):
        for c in bundle.classes:
            (root / split / c.replace("/", "-")).mkdir(parents=True, exist_ok=True)
        for i in range(len(source)):
            name = bundle.classes[int(source.targets[i])].replace("/", "-")
            Image.fromarray(source.images[i][0].numpy()).save(root / split / name / f"{i:05d}.png")
    (root / "DONE").write_text("")
    print(f"wrote {root} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)


def run_train(folder: Path, cache: Path, out: Path) -> dict:
    """One ``sotakit train``: seconds to the first step line and to exit, and the stderr lines."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    cmd = [sys.executable, "-m", "sotakit", "train", "--data", str(folder), "--output-dir", str(out), *TRAIN]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    first = banner = None
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        if banner is None and BANNER_LINE.search(line):
            banner = time.perf_counter() - t0
        if first is None and STEP_LINE.search(line):
            first = time.perf_counter() - t0
    if proc.wait() != 0:
        raise SystemExit("sotakit train failed:\n" + "\n".join(lines[-30:]))
    return {"banner": banner, "first_step": first, "total": time.perf_counter() - t0, "lines": lines}


def logged(lines: list[str], pattern: str) -> str:
    """The last line matching ``pattern`` (a progress task's last line has its total time)."""
    return next((ln.strip() for ln in reversed(lines) if re.search(pattern, ln)), "(not logged)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--folder", default="/tmp/sotakit-fmnist-png")
    p.add_argument("--note", default="", help="a line added to the result file (e.g. the machine's load)")
    args = p.parse_args()
    folder = Path(args.folder)
    make_folder(folder)
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "runs"
        first = run_train(folder, cache, out)
        second = run_train(folder, cache, out)
    t0 = time.perf_counter()  # the part of a start-up that is Python's and torch's, not sotakit's
    subprocess.run([sys.executable, "-c", "import torch, torchvision, sotakit.cli"], check=True)
    imports = time.perf_counter() - t0
    lines = ["# Start-up of `sotakit train` on a 60,000-image folder (Fashion-MNIST, 28 px PNG)", "",
             f"`.venv/bin/python benchmarks/startup.py` on {time.strftime('%Y-%m-%d')}",
             f"machine: {platform.machine()} {cpu_name()}, {os.cpu_count()} cores; python "
             f"{platform.python_version()}, torch {torch.__version__}",
             f"train flags: {' '.join(TRAIN)}; a fresh cache directory; n = 1 per row", ""]
    if args.note:
        lines += [args.note, ""]
    lines += ["| run | to the run banner (s) | to first step (s) | whole process (s) |", "|---|---|---|---|",
              f"| first (scan + cache build) | {first['banner']:.1f} | {first['first_step']:.1f} | "
              f"{first['total']:.1f} |",
              f"| second (cache hit) | {second['banner']:.1f} | {second['first_step']:.1f} | "
              f"{second['total']:.1f} |",
              f"| `python -c 'import torch, torchvision, sotakit.cli'` alone | {imports:.1f} | | |", "",
              "The banner is fit()'s last line before the training loop; the first step line includes "
              "the first step's compute.", "",
              "First run, as logged:", "",
              f"- scan: `{logged(first['lines'], r'indexing .*train: files')}`",
              f"- cache: `{logged(first['lines'], r'data cache')}`", "",
              "Second run, as logged:", "",
              f"- scan: `{logged(second['lines'], r'indexing .*train: files')}`",
              f"- cache: `{logged(second['lines'], r'data cache')}`"]
    result = (Path(__file__).parent / "results"
              / f"startup-{machine_tag()}-torch{torch.__version__.split('+')[0]}.md")
    result.parent.mkdir(exist_ok=True)
    result.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
