"""A data set's colour statistics: per-channel mean and std and the 3x3 RGB covariance's eigen-decomposition.

Normalization (fastbook ch. 7: "normalize, especially for pretrained models") uses the mean and std; the
eigenvalues and eigenvectors are what AlexNet-style PCA lighting noise (the RegNet recipe's "PCA jitter")
draws along. All figures are on the [0, 1] pixel scale, over the training split's pixels as the model sees
them (grayscale counted as RGB, so its covariance has rank 1). Population statistics over all pixels, not
the mean of per-image stds. Folder data sets use a seeded sample of at most ``max_images`` images; the
result is cached by the data fingerprint, so the pass runs once per data set.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as F

from .catalog import IMAGENET_MEAN, IMAGENET_STD
from .datasets import DataBundle, TensorSource
from .fingerprint import data_fingerprint
from .image_cache import CachedFolderSource

NORMALIZE_CHOICES = ("", "data", "imagenet", "none")


@dataclass(frozen=True)
class ColorStats:
    """Per-channel ``mean``/``std`` and the covariance's ``eigenvalues`` (descending) with their unit
    ``eigenvectors`` (``eigenvectors[k]`` belongs to ``eigenvalues[k]``; its largest entry is positive)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    covariance: tuple[tuple[float, ...], ...]
    eigenvalues: tuple[float, float, float]
    eigenvectors: tuple[tuple[float, float, float], ...]
    images: int
    pixels: int
    fingerprint: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def pca_parameters(self) -> tuple[tuple[float, ...], tuple[tuple[float, ...], ...]]:
        """(eigval, eigvec) in AlexNet's layout, ``eigvec[:, j]`` the j-th eigenvector: what
        ``make_loaders(pca_eigval=..., pca_eigvec=...)`` and ``PCALighting`` take."""
        return self.eigenvalues, tuple(zip(*self.eigenvectors))


def _sums(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(sum, sum of outer products, pixel count) of a uint8 (N, C, H, W) batch, as RGB in [0, 1], float64."""
    x = images.to(torch.float64).div_(255)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    flat = x.permute(1, 0, 2, 3).reshape(3, -1)
    return flat.sum(dim=1), flat @ flat.T, flat.shape[1]


def compute_color_stats(source, *, max_images: int = 5000, seed: int = 0, chunk: int = 1024,
                        progress=None) -> ColorStats:
    """The statistics of ``source`` (every image in memory; a seeded sample of a folder's)."""
    n = len(source)
    # a cached image folder is sampled as the folder is: the statistics are cached by the fingerprint,
    # which is the folder's either way
    in_memory = isinstance(source, TensorSource) and not isinstance(source, CachedFolderSource)
    if in_memory:
        order = list(range(n))
    else:
        g = torch.Generator().manual_seed(seed)
        order = sorted(torch.randperm(n, generator=g)[:max_images].tolist())
    total, outer, count = torch.zeros(3, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.float64), 0
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        if in_memory:
            batches = [source.images[part]]
        else:  # images of any size: one at a time
            batches = [F.to_image(source.load(i)[0])[None] for i in part]
        for b in batches:
            s, o, c = _sums(b)
            total, outer, count = total + s, outer + o, count + c
        if progress is not None:
            progress(min(start + chunk, len(order)), len(order))
    mean = total / count
    cov = outer / count - torch.outer(mean, mean)
    values, vectors = torch.linalg.eigh(cov)  # ascending; columns are the eigenvectors
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1).T
    signs = torch.sign(vectors.gather(1, vectors.abs().argmax(dim=1, keepdim=True)))
    vectors = vectors * signs  # a fixed sign, so the cached and recomputed results agree
    return ColorStats(tuple(mean.tolist()), tuple(cov.diagonal().sqrt().tolist()),
                      tuple(tuple(r) for r in cov.tolist()), tuple(values.tolist()),
                      tuple(tuple(r) for r in vectors.tolist()), len(order), count)


def _cache_file(fingerprint: str) -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sotakit" / "stats" / \
        f"{fingerprint[:32]}.json"


def color_stats(bundle: DataBundle, *, refresh: bool = False, progress=None) -> tuple[ColorStats, bool]:
    """The training split's statistics and whether they came from the cache (keyed by the fingerprint)."""
    fingerprint = data_fingerprint(bundle)
    path = _cache_file(fingerprint)
    if path.exists() and not refresh:
        try:
            doc = json.loads(path.read_text())
            return ColorStats(**{k: _tuples(v) for k, v in doc.items()}), True
        except (ValueError, TypeError):
            pass  # a torn or old cache file: compute again
    stats = compute_color_stats(bundle.train, progress=progress)
    stats = ColorStats(**{**asdict(stats), "fingerprint": fingerprint})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(stats.to_dict(), indent=1) + "\n")
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
    return stats, False


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def normalization(bundle: DataBundle, normalize: str = "") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for ``Normalize``: "" the data set's own (catalog figures; ImageNet's for folders),
    "data" measured on its training split (``color_stats``), "imagenet", or "none" (0 and 1: raw [0, 1])."""
    if normalize == "":
        return tuple(bundle.mean), tuple(bundle.std)
    if normalize == "data":
        stats, _ = color_stats(bundle)
        return stats.mean, stats.std
    if normalize == "imagenet":
        return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)
    if normalize == "none":
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    raise ValueError(f"normalize={normalize!r}: use data, imagenet or none ('' for the data set's own)")


def normalized(bundle: DataBundle, normalize: str = "") -> DataBundle:
    """``bundle`` with the mean and std ``normalization`` chooses: what its loaders and checkpoints use."""
    if normalize == "":
        return bundle
    mean, std = normalization(bundle, normalize)
    return dataclasses.replace(bundle, mean=tuple(mean), std=tuple(std))
