"""The repeated-augmentation sampler (Hoffer et al. 2019; Berman et al. 2019).

Plain shuffling uses torch's DistributedSampler, which takes an explicit replica count and so
serves one process too; this is the piece torch lacks.

Follows TorchVision's ``references/classification/sampler.py``: each index is repeated ``repetitions``
times in a row and the stream is dealt round-robin to the replicas, so the copies of one image land
in different processes (under DDP) or side by side in one batch (one process), each augmented anew.
One difference: the reference rounds the epoch down to a multiple of 256 images, which leaves a
small data set with no samples at all; here the epoch is ``len(dataset) // num_replicas``.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch.utils.data import Sampler


class RASampler(Sampler[int]):
    def __init__(self, num_samples: int, *, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, repetitions: int = 3):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} not in [0, {num_replicas})")
        self.n, self.num_replicas, self.rank = num_samples, num_replicas, rank
        self.shuffle, self.seed, self.repetitions = shuffle, seed, repetitions
        self.epoch = 0
        self.per_replica = math.ceil(num_samples * repetitions / num_replicas)
        self.selected = num_samples // num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        indices = [i for i in order for _ in range(self.repetitions)]
        total = self.per_replica * self.num_replicas
        indices += indices[: total - len(indices)]
        return iter(indices[self.rank:total:self.num_replicas][: self.selected])

    def __len__(self) -> int:
        return self.selected


class ResumableSampler(Sampler[int]):
    """Wraps an epoch-seeded sampler so an epoch can start after its first ``skip`` samples.

    The order is a function of (seed, epoch), so skipping the samples already trained on resumes
    a run mid-epoch with exactly the remaining images.
    """

    def __init__(self, inner):
        self.inner, self.skip = inner, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return itertools.islice(iter(self.inner), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)
