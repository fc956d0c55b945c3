"""Collate functions: batch finishing (float, normalize, erase) and MixUp / CutMix per batch.

As in the reference, mixing happens in the DataLoader's collate function; with both alphas set,
one of the two is picked at random for each batch (torchvision's RandomChoice). Mixed targets
come out as class-probability rows whose mass sums to one.
"""

from __future__ import annotations

import torch
from torch.utils.data import default_collate
from torchvision.transforms import v2

from .samplers import batch_seed
from .transforms import BatchFinish


class Collate:
    """A picklable collate function (DataLoader workers may need to pickle it)."""

    def __init__(self, finish: BatchFinish, num_classes: int = 0, mixup_alpha: float = 0.0,
                 cutmix_alpha: float = 0.0):
        self.finish = finish
        mixes = []
        if mixup_alpha > 0:
            mixes.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            mixes.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        self.mix = v2.RandomChoice(mixes) if mixes else None

    def __call__(self, batch):
        if len(batch[0]) == 3:  # (image, target, seed): batch-level randomness seeded by the first sample
            images, targets, keys = default_collate(batch)
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(batch_seed(keys[0]))  # CPU only, as fork_rng restores
                return self._finish(images, targets, keys)
        return self._finish(*default_collate(batch))

    def _finish(self, images, targets, keys=None):
        images = self.finish(images, keys)
        if self.mix is not None:
            images, targets = self.mix(images, targets)
        return images, targets
