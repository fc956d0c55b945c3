"""Inference resize tuning with a guard against overfitting the validation data.

The TorchVision blog tunes the eval resize (crop fixed) on one half of the validation set and
confirms the choice on the other half, because a knob picked on a set is optimistically biased on
that same set. One short loop: for each size, evaluate both halves; pick on half A only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data import BatchFinish, Collate, SampleDataset, make_eval_transform, stratified_split
from .evaluate import evaluate

IMAGENET_SIZES = (224, 256, 8)  # the blog's search range for a 224 crop
IMAGENET_CROP = 224


def parse_sizes(spec: str) -> list[int]:
    """``A:B:STEP`` (inclusive of B) as a list of sizes."""
    try:
        a, b, step = (int(x) for x in spec.split(":"))
    except ValueError:
        raise ValueError(f"--sizes {spec!r}: expected A:B:STEP with integers, e.g. 224:256:8") from None
    if a <= 0 or b < a or step <= 0:
        raise ValueError(f"--sizes {spec!r}: need 0 < A <= B and STEP > 0, e.g. 224:256:8")
    return list(range(a, b + 1, step))


def default_sizes(val_crop_size: int) -> list[int]:
    """224:256:8 for a 224 crop; for another crop the same relative range (sizes x crop/224),
    as presets.resolve() scales a recipe's sizes for small images. Duplicates after rounding drop."""
    a, b, step = IMAGENET_SIZES
    return sorted({max(val_crop_size, round(s * val_crop_size / IMAGENET_CROP))
                   for s in range(a, b + 1, step)})


def split_halves(targets: torch.Tensor, seed: int) -> tuple[list[int], list[int]]:
    """Two disjoint, covering, stratified halves of positions 0..N-1 (seeded): (A, B)."""
    return stratified_split(targets, 0.5, seed)[::-1]


@dataclass(frozen=True)
class ResizeTuning:
    sizes: list[int]
    acc_a: list[float]  # acc@1 on half A per size (the half the choice is made on)
    acc_b: list[float]  # acc@1 on half B per size (the confirmation)
    chosen: int
    current: int  # the run's val_resize_size before tuning
    crop_size: int  # the center crop, fixed while the resize varies
    n_a: int
    n_b: int
    confirmed: bool  # half B agrees: the chosen size is at least as good there as the current one

    @property
    def stored(self) -> int:
        """The size to keep: the choice when half B confirms it, else the current one."""
        return self.chosen if self.confirmed else self.current


def tune_resize(model: nn.Module, source, indices: list[int], *, sizes: list[int], crop_size: int,
                current: int, mean, std, interpolation: str = "bilinear", seed: int = 0,
                batch_size: int = 256, device: torch.device | str = "cpu",
                say: Callable[[str], None] | None = None,
                progress: Callable[[int, int], None] | None = None) -> ResizeTuning:
    """Evaluate ``model`` on both halves of ``source[indices]`` at every resize size; choose on half A.

    Ties on half A go to the size closest to ``current`` (no change without evidence). ``current``
    is always evaluated too, so half B can confirm (or not) that the choice beats it. ``say`` gets one
    line per size (default: the "sotakit" logger), ``progress(evaluations_done, evaluations_total)``
    is called after each half at each size.
    """
    say = say or logging.getLogger("sotakit.evaluate").info
    sizes = sorted(set(sizes) | {current})
    targets = source.targets[indices]
    half_a, half_b = ([indices[i] for i in h] for h in split_halves(targets, seed))
    collate = Collate(BatchFinish(mean, std, for_eval=True))
    acc_a, acc_b = [], []
    for size in sizes:
        tf = make_eval_transform(resize_size=size, crop_size=crop_size, interpolation=interpolation)
        for half, out in ((half_a, acc_a), (half_b, acc_b)):
            loader = DataLoader(SampleDataset(source, half, tf), batch_size=batch_size, collate_fn=collate)
            out.append(evaluate(model, loader, device=device)["acc1"])
            if progress is not None:
                progress(len(acc_a) + len(acc_b), 2 * len(sizes))
        say(f"resize {size}: half A {acc_a[-1]:.2f}  half B {acc_b[-1]:.2f}")
    best = max(range(len(sizes)), key=lambda i: (acc_a[i], -abs(sizes[i] - current)))
    confirmed = acc_b[best] >= acc_b[sizes.index(current)]
    return ResizeTuning(list(sizes), acc_a, acc_b, sizes[best], current, crop_size, len(half_a), len(half_b),
                        confirmed)
