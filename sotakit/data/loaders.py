"""DataLoaders for a run: seeded order, stratified holdout, repeated augmentation, exact DDP eval."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms import v2

from ..faults import fault_count
from .batch_augment import batch_crop_for
from .datasets import DataBundle, TensorSource, check_decode_errors
from .mixing import Collate
from .samplers import RASampler, ResumableSampler, worker_seed
from .stats import color_stats
from .transforms import (
    IMAGENET_PCA_EIGVAL,
    IMAGENET_PCA_EIGVEC,
    BatchFinish,
    PCALighting,
    make_eval_transform,
    make_train_transform,
)


class SampleDataset(Dataset):
    """``source`` restricted to ``indices`` with a transform: what a DataLoader iterates.

    An image that fails to decode is replaced by the source (deterministically); past
    ``max_decode_errors`` (a fraction of the source's images) the run stops with DecodeErrorLimit.
    The check runs where the failure is seen, in a worker or the main process: the count is shared
    (see FolderSource), and the batch keeps its plain (images, targets) shape for every loop.
    """

    def __init__(self, source, indices, transform, max_decode_errors: float = 1.0):
        self.source, self.indices, self.transform = source, list(indices), transform
        self.max_decode_errors = max_decode_errors

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        """``i`` or ``(i, seed)``: with a seed the transform draws from its own seeded stream and the
        seed goes along with the sample (the collate function seeds batch-level augmentation by it)."""
        i, key = i if isinstance(i, tuple) else (i, None)
        if fault_count("hang_in_load"):  # tests only (sotakit/faults.py)
            threading.Event().wait()
        image, j = self.source.load(self.indices[i])
        if j != self.indices[i]:
            check_decode_errors(self.source, self.max_decode_errors)
        if key is None:
            return self.transform(image), int(self.source.targets[j])
        if type(self.transform) is v2.ToPureTensor:  # the batch path: nothing random to seed per image
            return self.transform(image), int(self.source.targets[j]), key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(key)  # CPU only: torch.manual_seed would reseed CUDA too
            return self.transform(image), int(self.source.targets[j]), key

    @property
    def targets(self) -> torch.Tensor:
        return self.source.targets[self.indices]


def stratified_split(targets: torch.Tensor, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(keep, holdout) positions, seeded; the holdout has round(fraction * N) images, each class
    giving its share (largest-remainder rounding, so the total is exact)."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(targets).tolist()
    members = {c: torch.nonzero(targets == c).flatten() for c in classes}
    members = {c: idx[torch.randperm(len(idx), generator=g)].tolist() for c, idx in members.items()}
    exact = {c: fraction * len(members[c]) for c in classes}
    take = {c: int(exact[c]) for c in classes}
    short = round(fraction * len(targets)) - sum(take.values())
    for c in sorted(classes, key=lambda c: exact[c] - take[c], reverse=True)[:max(0, short)]:
        take[c] += 1
    keep, hold = [], []
    for c in classes:
        hold += members[c][:take[c]]
        keep += members[c][take[c]:]
    return sorted(keep), sorted(hold)


def stratified_folds(targets: torch.Tensor, k: int, seed: int) -> list[list[int]]:
    """K disjoint folds covering every position, seeded and stratified.

    Each class is shuffled and the classes are dealt one after another round-robin onto the folds,
    continuing where the previous class stopped: a class's count per fold differs by at most 1 across
    folds, and so do the fold sizes (hand-written: sklearn's StratifiedKFold is not a dependency).
    """
    if k < 2 or k > len(targets):
        raise ValueError(f"k-fold needs 2 <= K <= {len(targets)} images, got K={k}")
    g = torch.Generator().manual_seed(seed)
    order = []
    for c in torch.unique(targets).tolist():
        idx = torch.nonzero(targets == c).flatten()
        order += idx[torch.randperm(len(idx), generator=g)].tolist()
    return [sorted(order[f::k]) for f in range(k)]


def stratified_subset(targets: torch.Tensor, limit: int, seed: int) -> list[int]:
    """About ``limit`` positions with the class proportions of ``targets`` (all when limit is 0 or large)."""
    if limit <= 0 or limit >= len(targets):
        return list(range(len(targets)))
    return stratified_split(targets, limit / len(targets), seed + 1)[1]


@dataclass
class Loaders:
    train: DataLoader
    holdout: DataLoader | None
    test: DataLoader
    train_sampler: ResumableSampler  # set_epoch(epoch, skip=0)


def split_indices(train_targets: torch.Tensor, test_targets: torch.Tensor, *, holdout: float = 0.0,
                  kfold: int = 0, fold: int = 0, train_limit: int = 0, test_limit: int = 0,
                  seed: int = 0) -> tuple[list[int], list[int], list[int]]:
    """(train, holdout, test) positions: a stratified subset (``*_limit``), then the validation split.

    With ``kfold`` K the holdout is fold ``fold`` of the training pool and the rest trains; the pool
    and folds then use a fixed split seed, so fold k holds the same images whatever the run's seed.
    """
    pool = stratified_subset(train_targets, train_limit, 0 if kfold else seed)
    if kfold:
        folds = stratified_folds(train_targets[pool], kfold, seed=0)
        keep, hold = sorted(i for f, idx in enumerate(folds) if f != fold for i in idx), folds[fold]
    elif holdout > 0:
        keep, hold = stratified_split(train_targets[pool], holdout, seed)
    else:
        keep, hold = range(len(pool)), []
    return [pool[i] for i in keep], [pool[i] for i in hold], stratified_subset(test_targets, test_limit, seed)


def make_loaders(bundle: DataBundle, *, batch_size: int, train_crop_size: int, val_resize_size: int,
                 val_crop_size: int, interpolation: str = "bilinear", auto_augment: str | None = None,
                 ra_magnitude: int = 9, augmix_severity: int = 3, random_erase: float = 0.0,
                 crop_min_scale: float = 0.08, hflip_prob: float = 0.5, color_jitter: float = 0.0,
                 mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, ra_sampler: bool = False,
                 ra_reps: int = 3, holdout: float = 0.0, seed: int = 0, workers: int = 0, world_size: int = 1,
                 rank: int = 0, pin_memory: bool = False, eval_batch_size: int | None = None,
                 train_limit: int = 0, test_limit: int = 0, batch_augment: bool = True, timeout: float = 0.0,
                 kfold: int = 0, fold: int = 0, max_decode_errors: float = 0.01, pca_jitter: float = 0.0,
                 pca_stats: str = "imagenet", pca_eigval=IMAGENET_PCA_EIGVAL,
                 pca_eigvec=IMAGENET_PCA_EIGVEC, batch_path_workers: int | None = None) -> Loaders:
    """Train, holdout and test loaders for one process (rank ``rank`` of ``world_size``).

    The split is ``split_indices``'. When the per-image transform is exactly crop + flip, optionally
    with TrivialAugmentWide or RandAugment, and the data is in memory, these run on whole batches
    (``batch_crop_for``; ``batch_augment=False`` forces the per-image path). ``pca_jitter`` std of
    AlexNet's PCA lighting per training batch, with the eigen-decomposition ``pca_eigval``/``pca_eigvec``
    (ImageNet's by default; ``pca_stats="data"``: the training split's own, from ``color_stats``, cached
    by the data fingerprint). ``timeout`` (seconds, workers > 0) turns a hung or killed worker into an
    error instead of a stall. ``batch_path_workers``: at most this many worker processes when the batch
    path applies (fit passes 0 on a CPU, see ``cpu_batch_workers``).
    """
    train_tf = make_train_transform(
        crop_size=train_crop_size, interpolation=interpolation, hflip_prob=hflip_prob,
        auto_augment=auto_augment, ra_magnitude=ra_magnitude, augmix_severity=augmix_severity,
        crop_min_scale=crop_min_scale, color_jitter=color_jitter)
    crop = (batch_crop_for(train_tf, in_memory=isinstance(bundle.train, TensorSource))
            if batch_augment else None)
    if crop is not None:
        train_tf = v2.ToPureTensor()  # crop, flip (and the policy) happen in the collate function, per batch
        if batch_path_workers is not None:
            workers = min(workers, batch_path_workers)
    eval_tf = make_eval_transform(resize_size=val_resize_size, crop_size=val_crop_size,
                                  interpolation=interpolation)
    if pca_jitter > 0 and pca_stats == "data":
        pca_eigval, pca_eigvec = color_stats(bundle)[0].pca_parameters()
    lighting = PCALighting(pca_jitter, pca_eigval, pca_eigvec) if pca_jitter > 0 else None
    train_collate = Collate(BatchFinish(bundle.mean, bundle.std, random_erase, crop, lighting),
                            len(bundle.classes), mixup_alpha, cutmix_alpha)
    eval_collate = Collate(BatchFinish(bundle.mean, bundle.std, for_eval=True))
    keep, hold, test_idx = split_indices(bundle.train.targets, bundle.test.targets, holdout=holdout,
                                         kfold=kfold, fold=fold, train_limit=train_limit,
                                         test_limit=test_limit, seed=seed)
    train_ds = SampleDataset(bundle.train, keep, train_tf, max_decode_errors)
    if ra_sampler:
        sampler = RASampler(len(train_ds), num_replicas=world_size, rank=rank, seed=seed, repetitions=ra_reps)
    else:
        sampler = DistributedSampler(train_ds, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                     drop_last=False)
    sampler = ResumableSampler(sampler, seed=seed, rank=rank)
    # The DataLoader gets its own generator so worker seeds depend on the run's seed and rank only.
    # Workers are not persistent: re-seeded from this generator each epoch (set_data_epoch), a resumed
    # epoch matches.
    gen = torch.Generator().manual_seed(worker_seed(seed, rank))
    common = dict(num_workers=workers, pin_memory=pin_memory,
                  worker_init_fn=_ignore_signals if workers else None, timeout=timeout if workers else 0.0)
    # Keep the last partial batch as the reference does, unless it would hold a single image
    # (BatchNorm cannot train on one).
    train = DataLoader(train_ds, batch_size=batch_size, sampler=sampler,
                       drop_last=len(sampler) % batch_size == 1, collate_fn=train_collate, generator=gen,
                       **common)
    eval_bs = eval_batch_size or batch_size * 2

    def eval_loader(source, indices):
        # Exact evaluation under DDP: rank r takes every world_size-th image, nothing padded or repeated.
        ds = SampleDataset(source, list(indices)[rank::world_size], eval_tf, max_decode_errors)
        return DataLoader(ds, batch_size=eval_bs, shuffle=False, collate_fn=eval_collate, **common)

    return Loaders(train, eval_loader(bundle.train, hold) if hold else None,
                   eval_loader(bundle.test, test_idx), sampler)


def set_data_epoch(loaders: Loaders, *, epoch: int, skip_batches: int = 0, crop_size: int | None = None,
                seed: int = 0, rank: int = 0) -> None:
    """Set the data state of training epoch ``epoch``: order, skip, crop size and worker seeds.

    Each is a function of (seed, rank, epoch), so a resumed epoch (``skip_batches`` already trained)
    sees exactly the batches the uninterrupted run saw.
    """
    loaders.train_sampler.set_epoch(epoch, skip=skip_batches * loaders.train.batch_size)
    if crop_size is not None:
        set_train_crop_size(loaders, crop_size)
    loaders.train.generator.manual_seed(worker_seed(seed, rank, epoch))


def set_train_crop_size(loaders: Loaders, size: int) -> None:
    """Change the training crop size between epochs (progressive resizing).

    Workers are re-created each epoch (not persistent), so they pick up the new size too.
    """
    crop = loaders.train.collate_fn.finish.crop
    if crop is not None:
        crop.size = size
        return
    for t in loaders.train.dataset.transform.transforms:
        if isinstance(t, v2.RandomResizedCrop):
            t.size = (size, size)


def _ignore_signals(worker_id: int) -> None:
    """Workers leave SIGINT/SIGTERM/SIGUSR1 to the main process, which checkpoints and stops them.

    A worker moves to its own process group, so signals to the job's group (Ctrl-C, SLURM's
    ``scancel -b``, ``kill -TERM -PGID``) miss it, while its default SIGTERM stays: ignoring SIGTERM
    instead made the interpreter hang at exit after a worker raised (multiprocessing terminates
    leftover workers with SIGTERM and joins them). A worker whose parent dies exits by DataLoader's
    own watchdog.
    """
    import os
    import signal
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # its default action would kill the worker


def kill_loader_workers() -> int:
    """SIGKILL this process's DataLoader workers; returns how many. For the error path only: a hung
    (stopped, deadlocked) worker ignores the SIGTERM torch and multiprocessing send on shutdown,
    and multiprocessing's exit handler would then wait for it forever.

    DataLoader's SIGCHLD handler is switched off first: the iterator that registered the workers is
    still alive in the traceback, so each death would raise "worker killed" again, anywhere, and
    replace the error being reported.
    """
    import multiprocessing
    import signal
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    except (ValueError, AttributeError):  # not the main thread (no handler of ours there), or no SIGCHLD
        pass
    workers = [c for c in multiprocessing.active_children()
               if getattr(getattr(c, "_target", None), "__name__", "") == "_worker_loop"]
    for w in workers:
        w.kill()
        w.join(timeout=5)
    return len(workers)

