"""Training throughput on this machine: data path and thread settings, as ratios in one run.

Run by hand (the machine should be otherwise idle):

    .venv/bin/python benchmarks/throughput.py

Writes benchmarks/results/throughput-<machine>-torch<version>.md with the medians of several
repeats of a fixed number of training steps of resnet9_w16 on Fashion-MNIST (28 px, batch 256).
Compared settings:
  * batch crop/flip (in-memory data) vs per-image torchvision transforms;
  * per-image transforms in the main process with the intra-op pool left at all threads vs
    switched to one thread while fetching (sotakit's default);
  * one DataLoader worker process vs none.
The first steps of each setting are a warm-up and not timed.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

from sotakit.data import load_data, make_loaders
from sotakit.models import build_model

STEPS, WARMUP, REPEATS, BATCH = 24, 4, 3, 256


def run(bundle, *, batch_augment: bool, workers: int, thread_toggle: bool) -> float:
    """Images per second over STEPS training steps (data loading included), after WARMUP steps."""
    torch.manual_seed(0)
    loaders = make_loaders(bundle, batch_size=BATCH, train_crop_size=28, val_resize_size=28, val_crop_size=28,
                           crop_min_scale=0.6, workers=workers, batch_augment=batch_augment,
                           train_limit=BATCH * (STEPS + WARMUP))
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


def main() -> None:
    torch.set_flush_denormal(True)
    bundle = load_data("fashion-mnist")
    settings = {
        "batch crop, main process, thread toggle (sotakit default)": dict(batch_augment=True, workers=0, thread_toggle=True),
        "per-image transforms, main process, thread toggle": dict(batch_augment=False, workers=0, thread_toggle=True),
        "per-image transforms, main process, all threads": dict(batch_augment=False, workers=0, thread_toggle=False),
        "per-image transforms, 1 worker process": dict(batch_augment=False, workers=1, thread_toggle=False),
    }
    results = {name: [] for name in settings}
    for _ in range(REPEATS):  # interleaved, so drift in machine load hits every setting alike
        for name, kw in settings.items():
            results[name].append(run(bundle, **kw))
    base = statistics.median(results[next(iter(settings))])
    lines = [f"# Training throughput, resnet9_w16 on Fashion-MNIST 28 px, batch {BATCH}",
             "", f"`{' '.join(sys.argv) or 'benchmarks/throughput.py'}` on {time.strftime('%Y-%m-%d')}",
             f"machine: {platform.machine()} {platform.processor()}, {torch.get_num_threads()} threads; "
             f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}",
             f"{STEPS} timed steps after {WARMUP} warm-up steps, median of {REPEATS} repeats", "",
             "| setting | img/s (median) | runs | ratio to default |", "|---|---|---|---|"]
    for name, vals in results.items():
        med = statistics.median(vals)
        lines.append(f"| {name} | {med:.0f} | {', '.join(f'{v:.0f}' for v in vals)} | {med / base:.2f} |")
    out = Path(__file__).parent / "results" / f"throughput-{platform.machine()}-torch{torch.__version__.split('+')[0]}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
