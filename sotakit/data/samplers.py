"""Samplers and the seed formulas of the data pipeline: the repeated-augmentation sampler (Hoffer et al.
2019; Berman et al. 2019), per-sample and per-worker seeds, resumable epochs.

Plain shuffling uses torch's DistributedSampler, which takes an explicit replica count and so
serves one process too; this is the piece torch lacks.

Follows TorchVision's ``references/classification/sampler.py``: each index is repeated ``repetitions``
times in a row and the stream is dealt round-robin to the replicas, so the copies of one image land
in different processes (under DDP) or side by side in one batch (one process), each augmented anew.
One difference: the reference rounds the epoch down to a multiple of 256 images, which leaves a
small data set with no samples at all; here the epoch is ``len(dataset) // num_replicas``.
"""

from __future__ import annotations

import hashlib
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


def worker_seed(seed: int, rank: int, epoch: int | None = None) -> int:
    """The seed of a rank's DataLoader generator (worker seeds), before the first epoch or for ``epoch``.

    Ranks must differ, or copies of an image on two ranks get the same augmentation; epochs must
    differ so a resumed epoch re-seeds its (non-persistent) workers as the uninterrupted run did.
    """
    base = seed * 1000 + rank
    return base if epoch is None else base * 100_003 + epoch


def sample_seed(*counters: int) -> int:
    """A 63-bit seed that is a function of the counters only (seed, rank, epoch, position).

    Hashing (rather than ``seed + pos``) keeps nearby counters' streams unrelated.
    """
    digest = hashlib.blake2b(",".join(map(str, counters)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


_MASK64 = (1 << 64) - 1


def _as_int64(value: int) -> int:
    """An unsigned 64-bit constant as the signed int64 that has its bits (torch has no uint64 math)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic on signed integers)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def sample_uniforms(keys: torch.Tensor, stream: int, count: int) -> torch.Tensor:
    """(n, count) float64 uniforms in [0, 1), row i a function of (``keys[i]``, ``stream``) only.

    Counter-based (splitmix64's increment and finalizer on the key plus a counter, in int64 with
    wrapping multiplication), so a batch's per-image draws are a few tensor operations instead of
    a generator seeded per image, and an image draws the same values in whichever batch, worker or
    resumed epoch it lands. ``stream`` separates the uses of one key (policy, erasing).
    """
    counters = torch.arange(count, dtype=torch.int64) + (stream << 32) + 1
    z = keys.to(torch.int64).view(-1, 1) + counters * _as_int64(0x9E3779B97F4A7C15)
    z = (z ^ _shift_right(z, 30)) * _as_int64(0xBF58476D1CE4E5B9)
    z = (z ^ _shift_right(z, 27)) * _as_int64(0x94D049BB133111EB)
    z = z ^ _shift_right(z, 31)
    return _shift_right(z, 11).to(torch.float64) * (1.0 / (1 << 53))


def batch_seed(first_sample_seed: int) -> int:
    """The seed of a batch's own randomness (MixUp/CutMix, erasing): derived from its first sample's."""
    return int(first_sample_seed) ^ 0x5EED


class ResumableSampler(Sampler[tuple[int, int]]):
    """Wraps an epoch-seeded sampler so an epoch can start after its first ``skip`` samples.

    Yields ``(index, augmentation seed)``: the seed is a function of (seed, rank, epoch, position in
    the epoch), so each sample's augmentation is the same whichever worker draws it and however the
    epoch was split by a resume (counter-based randomness, as reliability.md recommends: saving RNG
    states alone is not enough once DataLoader workers or a mid-epoch restart are involved). The
    order is a function of (seed, epoch), so skipping the samples already trained on resumes a run
    mid-epoch with exactly the remaining images.
    """

    def __init__(self, inner, *, seed: int = 0, rank: int = 0):
        self.inner, self.skip, self.seed, self.rank = inner, 0, seed, rank

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        epoch = getattr(self, "epoch", 0)
        for pos, index in itertools.islice(enumerate(self.inner), self.skip, None):
            yield index, sample_seed(self.seed, self.rank, epoch, pos)

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)
