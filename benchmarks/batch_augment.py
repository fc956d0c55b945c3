"""The training data path alone: per-image torchvision transforms vs the batched path, in img/s.

Run by hand (the machine should be otherwise idle):

    .venv/bin/python benchmarks/batch_augment.py [--repeats N]

Iterates the training loader (main process, no model) of in-memory Fashion-MNIST at 28 px (crop 28)
and of the same images upscaled to 72 px (crops 32 and 72), batch 256, with the TorchVision v2 recipe's
augmentation (TrivialAugmentWide, random erasing 0.1), with RandAugment instead, and with crop and
flip only. ``batch_augment=False`` gives torchvision's per-image transforms in the Dataset (what the
batch path replaces), True the batched path (``BatchCropFlip`` + ``BatchAutoAugment`` +
``BatchErasing`` in the collate function). Settings interleaved over the repeats, warm-up batches not
timed. Writes benchmarks/results/batch-augment-<machine>-torch<version>.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torchvision
from throughput import cpu_name, write_results
from torchvision.transforms.v2 import functional as F

from sotakit.data import DataBundle, TensorSource, load_data, make_loaders

BATCH, WARMUP, STEPS, REPEATS = 256, 2, 12, 5
POLICIES = {"TrivialAugmentWide + erasing 0.1": dict(auto_augment="ta_wide", random_erase=0.1),
            "RandAugment (2 ops, m 9) + erasing 0.1": dict(auto_augment="ra", random_erase=0.1),
            "crop + flip only": dict()}


def upscaled(bundle: DataBundle, size: int, n: int) -> DataBundle:
    """The first ``n`` training images resized to ``size`` px, in memory (as a presized cache holds them)."""
    images = F.resize(bundle.train.images[:n], [size, size], antialias=True)
    source = TensorSource(images, bundle.train.targets[:n])
    return DataBundle(f"{bundle.name}-{size}px", bundle.classes, size, bundle.mean, bundle.std, source,
                      source)


def images_per_second(bundle: DataBundle, crop: int, batch_augment: bool, **augment) -> float:
    """img/s of STEPS training batches (loading, augmentation, collate), after WARMUP batches."""
    loaders = make_loaders(bundle, batch_size=BATCH, train_crop_size=crop, val_resize_size=crop,
                           val_crop_size=crop, batch_augment=batch_augment, workers=0,
                           train_limit=BATCH * (WARMUP + STEPS), **augment)
    assert (loaders.train.collate_fn.finish.crop is not None) == batch_augment
    it = iter(loaders.train)
    for _ in range(WARMUP):
        next(it)
    t0 = time.perf_counter()
    for _ in range(STEPS):
        next(it)
    return STEPS * BATCH / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS, help="interleaved repeats (median taken)")
    repeats = parser.parse_args().repeats
    load = os.getloadavg()[0]  # written with the result: a loaded machine's figures are not the machine's
    fmnist = load_data("fashion-mnist")
    datasets = {"Fashion-MNIST 28 px, crop 28": (fmnist, 28),
                "72 px, crop 32": (upscaled(fmnist, 72, BATCH * (WARMUP + STEPS) + 1), 32),
                "72 px, crop 72": (upscaled(fmnist, 72, BATCH * (WARMUP + STEPS) + 1), 72)}
    cases = [(d, p, b) for d in datasets for p in POLICIES for b in (False, True)]
    results = {case: [] for case in cases}
    for _ in range(repeats):  # interleaved, so drift in machine load hits every setting alike
        for d, p, b in cases:
            bundle, crop = datasets[d]
            results[(d, p, b)].append(images_per_second(bundle, crop, b, **POLICIES[p]))
    lines = [f"# Data path alone, per-image torchvision transforms vs batched, batch {BATCH}", "",
             f"`.venv/bin/python benchmarks/batch_augment.py` on {time.strftime('%Y-%m-%d')}",
             f"machine: {platform.machine()} {cpu_name()}, {torch.get_num_threads()} threads; "
             f"python {platform.python_version()}, torch {torch.__version__}, torchvision "
             f"{torchvision.__version__}; load average {load:.1f} at the start",
             f"{STEPS} timed batches after {WARMUP} warm-up batches, main process (workers 0), no model; "
             f"median of {repeats} interleaved repeats (min-max in brackets)", "",
             "| data | augmentation | per-image img/s | batched img/s | speed-up |", "|---|---|---|---|---|"]
    for d in datasets:
        for p in POLICIES:
            per, bat = results[(d, p, False)], results[(d, p, True)]
            lines.append(f"| {d} | {p} | {statistics.median(per):.0f} ({min(per):.0f}-{max(per):.0f}) | "
                         f"{statistics.median(bat):.0f} ({min(bat):.0f}-{max(bat):.0f}) | "
                         f"{statistics.median(bat) / statistics.median(per):.1f}x |")
    write_results("batch-augment", lines)

if __name__ == "__main__":
    main()
