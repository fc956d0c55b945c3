"""Issue 14 target 2: the full TorchVision v2 recipe on in-memory data against a plain loop's img/s.

Target: with the whole recipe (TrivialAugment, random erasing 0.1, mixup 0.2 / cutmix 1.0, label
smoothing 0.1, EMA, RA sampler, no warm-up) ``train_one_epoch`` reaches at least 90% of the images per
second of a plain PyTorch loop (in-memory uint8 images, no augmentation) on the same model, optimizer,
precision and batch. Both run in one process, in interleaved blocks (plain, loader alone, full, plain,
...), after an untimed warm-up block each; the figures are medians over the blocks with min-max and n
(``sotakit.experiments.bench``, the code behind `sotakit bench`). Model and data as the side-by-side:
resnet18 with its ImageNet stem, batch 128, train crop 32, ``-j 2``, on in-memory Fashion-MNIST. Run by
hand on a quiet machine:

    .venv/bin/python benchmarks/ceiling.py [--seconds 60] [--blocks 7]

Writes benchmarks/results/ceiling-<machine>-torch<version>.md: one row in float32 and, where the CPU
has native bfloat16, one with ``--amp`` (bf16 autocast) and channels-last.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from sotakit.experiments.bench import bench_recipe, limiting_stage, machine_line, machine_tag
from sotakit.recipes import load_preset, make_recipe

TARGET = 0.90


def recipe_for(*, amp: bool, workers: int):
    return make_recipe(load_preset("torchvision-v2"), data="fashion-mnist", model="resnet18", device="cpu",
                       batch_size=128, epochs=1, lr_warmup_epochs=0, train_crop_size=32, val_crop_size=32,
                       val_resize_size=32, workers=workers, amp=amp, channels_last=amp)


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="timed seconds per precision (default: 60)")
    p.add_argument("--blocks", type=int, default=7, help="interleaved blocks per stage (default: 7)")
    p.add_argument("-j", "--workers", type=int, default=2, help="loader worker processes (default: 2)")
    args = p.parse_args(argv)
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    rows = []
    for amp in (False, True) if bf16 else (False,):
        result = bench_recipe(recipe_for(amp=amp, workers=args.workers), seconds=args.seconds,
                              blocks=args.blocks, small_input=False)
        rows.append(("bf16 autocast, channels-last" if amp else "float32", result))
        print(rows[-1][0], _cell(result.ceiling), _cell(result.full), flush=True)
    lines = ["# Full v2 recipe vs a plain loop, in-memory Fashion-MNIST (issue 14 target 2: >= 0.90)", "",
             f"`python benchmarks/ceiling.py --seconds {args.seconds:g} --blocks {args.blocks} "
             f"-j {args.workers}` on {time.strftime('%Y-%m-%d')}",
             f"machine: {machine_line()}",
             "model resnet18 (ImageNet stem), batch 128, train crop 32; recipe torchvision-v2 with "
             "--epochs 1 --lr-warmup-epochs 0; figures: img/s median (min-max) over interleaved blocks in "
             "one process",
             "" if bf16 else "this CPU has no native bfloat16: float32 only", "",
             "| precision | n | steps/block | plain loop | loader alone | full recipe | full / plain "
             "| target |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        ratio = r.median("full") / r.median("ceiling")
        lines.append(f"| {name} | {len(r.full)} | {r.steps_per_block} | {_cell(r.ceiling)} | "
                     f"{_cell(r.data)} | {_cell(r.full)} | {ratio:.2f} | "
                     f"{'met' if ratio >= TARGET else 'not met'} |")
    lines += [""] + [f"{name}: {limiting_stage(r)}" for name, r in rows]
    version = torch.__version__.split("+")[0]
    path = Path(__file__).parent / "results" / f"ceiling-{machine_tag()}-torch{version}.md"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
