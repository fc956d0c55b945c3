"""Training throughput on this machine: data path and thread settings, as ratios in one run.

Run by hand (the machine should be otherwise idle):

    .venv/bin/python benchmarks/throughput.py

Writes benchmarks/results/throughput-<machine>-torch<version>.md with the medians of several
repeats of a fixed number of training steps of resnet9_w16 on Fashion-MNIST (28 px, batch 256).
Compared settings:
  * batch crop/flip (in-memory data) vs per-image torchvision transforms;
  * denormal floats flushed to zero (sotakit's default on CPU) or not;
  * per-image transforms with the intra-op pool left at all threads vs one thread while fetching;
  * one DataLoader worker process vs none, also with TrivialAugment (per-image by nature).
The first steps of each setting are a warm-up and not timed.
"""

from __future__ import annotations

import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

from sotakit.data import load_data, make_loaders
from sotakit.experiments.bench import machine_tag
from sotakit.models import build_model
from sotakit.train.machine import cpu_name  # machines of one kind differ by up to 2x: a result names its CPU


def ratio_rows(results: dict[str, list[float]], base: float) -> list[str]:
    """Table rows: setting, median img/s, every repeat, and the median's ratio to ``base``."""
    rows = []
    for name, vals in results.items():
        med = statistics.median(vals)
        rows.append(f"| {name} | {med:.0f} | {', '.join(f'{v:.0f}' for v in vals)} | {med / base:.2f} |")
    return rows


def write_results(what: str, lines: list[str]) -> None:
    """Print ``lines`` and write them to results/<what>-<machine>-torch<version>.md."""
    out = (Path(__file__).parent / "results"
           / f"{what}-{machine_tag()}-torch{torch.__version__.split('+')[0]}.md")
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

STEPS, WARMUP, REPEATS, BATCH = 24, 4, 3, 256


def run(bundle, *, batch_augment: bool, workers: int, thread_toggle: bool = False,
        auto_augment: str | None = None, flush_denormal: bool = True) -> float:
    """Images per second over STEPS training steps (data loading included), after WARMUP steps."""
    torch.set_flush_denormal(flush_denormal)
    torch.manual_seed(0)
    loaders = make_loaders(bundle, batch_size=BATCH, train_crop_size=28, val_resize_size=28, val_crop_size=28,
                           crop_min_scale=0.6, workers=workers, batch_augment=batch_augment,
                           auto_augment=auto_augment, train_limit=BATCH * (STEPS + WARMUP))
    model = build_model("resnet9_w16", num_classes=10).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    threads = torch.get_num_threads()
    it = iter(loaders.train)
    t0 = None
    for step in range(STEPS + WARMUP):
        if step == WARMUP:
            t0 = time.perf_counter()
        if thread_toggle:
            torch.set_num_threads(1)
        x, y = next(it)
        torch.set_num_threads(threads)
        loss = nn.functional.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return STEPS * BATCH / (time.perf_counter() - t0)


SETTINGS = {
        "batch crop, main process (sotakit default)": dict(batch_augment=True, workers=0),
        "batch crop, main process, denormals not flushed": dict(batch_augment=True, workers=0,
                                                                flush_denormal=False),
        "per-image transforms, main process": dict(batch_augment=False, workers=0),
        "per-image transforms, main process, one thread while fetching": dict(batch_augment=False, workers=0,
                                                                          thread_toggle=True),
        "per-image transforms, 1 worker process": dict(batch_augment=False, workers=1),
        "TrivialAugment per image, main process": dict(batch_augment=False, workers=0,
                                                       auto_augment="ta_wide"),
        "TrivialAugment per image, 1 worker process": dict(batch_augment=False, workers=1,
                                                           auto_augment="ta_wide"),
}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        # One setting in a fresh process: thread-pool and floating-point state (denormal flushing
        # is per thread) cannot leak from one setting into the next.
        print(run(load_data("fashion-mnist"), **SETTINGS[sys.argv[2]]))
        return
    settings = SETTINGS
    results = {name: [] for name in settings}
    for _ in range(REPEATS):  # interleaved, so drift in machine load hits every setting alike
        for name in settings:
            out = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True,
                                 check=True)
            results[name].append(float(out.stdout.strip().splitlines()[-1]))
    base = statistics.median(results[next(iter(settings))])
    lines = [f"# Training throughput, resnet9_w16 on Fashion-MNIST 28 px, batch {BATCH}",
             "", f"`.venv/bin/python benchmarks/throughput.py` on {time.strftime('%Y-%m-%d')}",
             f"machine: {platform.machine()} {cpu_name()}, {torch.get_num_threads()} threads; "
             f"python {platform.python_version()}, torch {torch.__version__}, torchvision "
             f"{torchvision.__version__}",
             f"{STEPS} timed steps after {WARMUP} warm-up steps, each in a fresh process, median of "
             f"{REPEATS} repeats", "",
             "| setting | img/s (median) | runs | ratio to default |", "|---|---|---|---|"]
    lines += ratio_rows(results, base)
    write_results("throughput", lines)


if __name__ == "__main__":
    main()
