"""Data sets as image sources (index -> raw image, label) with their class names and statistics.

Two kinds of source: ``TensorSource`` keeps a whole data set in memory as uint8 tensors (Fashion-MNIST,
CIFAR: "faster to load and process uint8", as airbench does), ``FolderSource`` reads an ImageFolder
tree (``train/<class>/*``, ``val/<class>/*``) after one decode pass that sets aside unreadable files,
so a bad JPEG is listed at the start instead of crashing a run hours in.
"""

from __future__ import annotations

import gzip
import os
import statistics
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from torchvision import tv_tensors

from . import catalog
from .catalog import IMAGENET_MEAN, IMAGENET_STD
from .folder_index import list_classes, scan_folder
from .images import EXTENSION_FORMATS, ImageRejected, read_image

# progress(label, unit) -> the (done, total) callback of one long step (folder scan, download), or None
ProgressFor = Callable[[str, str], Callable[[int, int | None], None] | None]


class TensorSource:
    """A data set held in memory: ``images`` uint8 (N, C, H, W), ``targets`` int64 (N,)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(targets):
            raise ValueError("TensorSource wants uint8 images (N, C, H, W) and N targets")
        self.images, self.targets = images, targets.long()

    def __len__(self) -> int:
        return len(self.targets)

    def decode_errors(self) -> int:
        """Always 0: the tensors were checked when the data set was read."""
        return 0

    def load(self, i: int):
        """(image, index it came from): always ``i`` here."""
        return tv_tensors.Image(self.images[i]), i


class DecodeErrorLimit(ValueError):
    """More images failed to decode during the run than ``max_decode_errors`` allows."""


def check_decode_errors(source, max_decode_errors: float) -> None:
    """Raise DecodeErrorLimit once more than ``max_decode_errors`` x len(source) files failed to decode."""
    count, allowed = source.decode_errors(), max_decode_errors * len(source)
    if count > allowed:
        raise DecodeErrorLimit(
            f"{count} of {len(source)} images failed to decode during the run, more than the threshold "
            f"--max-decode-errors {max_decode_errors} ({allowed:g} images); each was replaced by the next "
            f"readable image. Check the disk or the files, or raise --max-decode-errors to continue.")


class FolderSource:
    """Images listed as (path, class index); decoded to RGB on access by ``images.read_image``.

    ``failed`` marks the files that failed to decode during the run. It lives in shared memory, so
    DataLoader worker processes mark the parent's copy: the count (distinct files, not attempts)
    is right with any number of workers, and setting a flag needs no lock. ``stats``: each sample's
    (size in bytes, mtime in ns) from the scan, which the fingerprint and the data cache read instead
    of a second stat per file (None: they stat the files).
    """

    def __init__(self, samples: list[tuple[str, int]], *, max_pixels: int | None = None,
                 stats: list[tuple[int, int]] | None = None):
        if stats is not None and len(stats) != len(samples):
            raise ValueError(f"FolderSource: {len(stats)} stats for {len(samples)} samples")
        self.samples, self.max_pixels, self.stats = samples, max_pixels, stats
        self.targets = torch.tensor([t for _, t in samples], dtype=torch.long)
        self.failed = torch.zeros(len(samples), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    def decode_errors(self) -> int:
        """How many files failed to decode since the source was made."""
        return int(self.failed.sum())

    def load(self, i: int):
        """(RGB image, index it came from).

        A file that went bad after the scan is marked and replaced by the next readable one
        (deterministic), so one broken image cannot stop a long run; the caller labels it by the
        index returned and decides from ``decode_errors()`` when to stop.
        """
        for k in range(len(self.samples)):
            j = (i + k) % len(self.samples)
            if self.failed[j]:
                continue
            try:
                return read_image(self.samples[j][0], max_pixels=self.max_pixels)[0], j
            except (ImageRejected, OSError):  # OSError: the file vanished
                self.failed[j] = True
        raise DecodeErrorLimit(f"none of the {len(self.samples)} images can be read any more")


@dataclass
class DataBundle:
    """A data set's train and test sources with what a run needs to know about them."""

    name: str
    classes: list[str]
    native_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train: TensorSource | FolderSource
    test: TensorSource | FolderSource
    report: list[dict] = field(default_factory=list)  # rows of data_report.csv (image folders only)

    @property
    def channels(self) -> int:
        """Channels of the stored images: 1 for grayscale tensors (made RGB per batch), else 3
        (image folders are decoded to RGB)."""
        images = getattr(self.train, "images", None)
        return images.shape[1] if images is not None else 3

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of the files the index pass excluded."""
        return [(r["path"], r["reason"]) for r in self.report if r["status"] != "loaded"]


def image_channels(bundle: DataBundle) -> int:
    """Channels of the stored images: 1 for grayscale tensors (Fashion-MNIST), else 3 (folders are RGB)."""
    return int(bundle.train.images.shape[1]) if isinstance(bundle.train, TensorSource) else 3


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (gz or raw) as a tensor; format from the MNIST page (magic: 0, 0, dtype, ndim)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    remedy = ("delete it so that sotakit downloads it again (or reinstall the package that ships it, e.g. "
              "dataset-fashion-mnist)")
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # a torn or corrupted gzip stream
        raise ValueError(f"{path} is damaged ({type(e).__name__}: {e}): {remedy}") from None
    if len(data) < 4:
        raise ValueError(f"{path} is damaged (only {len(data)} bytes): {remedy}")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()}): {remedy}")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim]) if len(data) >= 4 + 4 * ndim else ()
    body = data[4 + 4 * ndim:]
    if not shape or len(body) != int(torch.Size(shape).numel()):
        raise ValueError(f"{path}: truncated IDX file ({len(body)} bytes for shape {shape}): {remedy}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def load_idx_pair(folder: Path, prefix: str) -> TensorSource:
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
    return TensorSource(images.unsqueeze(1).contiguous(), labels.long())


def load_image_folder(path: str | Path, *, name: str | None = None, classes: list[str] | None = None,
                      mean=IMAGENET_MEAN, std=IMAGENET_STD, native_size: int | None = None,
                      max_pixels: int | None = None, progress: ProgressFor | None = None) -> DataBundle:
    """An ImageNet-layout folder: ``train/<class>/*`` and ``val/<class>/*`` (val is the test split).

    Every file is decoded once (folder_index.py); images over ``max_pixels`` (default Pillow's
    ``Image.MAX_IMAGE_PIXELS``, 89.5 M) are excluded like unreadable ones. ``progress`` as in load_data.
    """
    root = Path(path)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise FileNotFoundError(
                f"{root / split} is missing: --data PATH needs PATH/train/<class>/* and PATH/val/<class>/*")
    train_classes, val_classes = list_classes(root / "train"), list_classes(root / "val")
    class_to_idx = {c: i for i, c in enumerate(train_classes)}
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        raise ValueError(f"train and val classes differ in {root}: only in train: {only_train or 'none'}; "
                         f"only in val: {only_val or 'none'}. Both folders need the same class sub-folders.")
    cache_dir = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sotakit" / "index"
    train, rows_tr, stats_tr = scan_folder(root / "train", class_to_idx, max_pixels=max_pixels,
                                           cache_dir=cache_dir, progress=_task(progress, root / "train"))
    test, rows_te, stats_te = scan_folder(root / "val", class_to_idx, max_pixels=max_pixels,
                                          cache_dir=cache_dir, progress=_task(progress, root / "val"))
    if not train:
        reasons = Counter(r["reason"] for r in rows_tr)
        raise ValueError(f"no readable training images under {root / 'train'} ({len(rows_tr)} files: "
                         f"{', '.join(f'{n} {r}' for r, n in reasons.most_common())})")
    sizes = [min(r["width"], r["height"]) for r in rows_tr if r["status"] == "loaded"]
    native = native_size or int(statistics.median(sizes))
    return DataBundle(name or root.name, classes or train_classes, native, tuple(mean), tuple(std),
                      FolderSource(train, max_pixels=max_pixels, stats=stats_tr),
                      FolderSource(test, max_pixels=max_pixels, stats=stats_te), rows_tr + rows_te)


def _task(progress: ProgressFor | None, what) -> Callable[[int, int | None], None] | None:
    return progress(f"indexing {what}", "files") if progress is not None else None


def load_data(data: str, data_root: str | None = None, *, progress: ProgressFor | None = None) -> DataBundle:
    """A data set by catalog name (fashion-mnist, cifar10, imagenette-160, ...) or folder path.

    ``progress(label, unit)``, when given, returns the ``(done, total)`` callback of each long step: the
    folder scan (files) and a download (bytes); ``sotakit.train.progress.task_progress`` shows them.
    """
    if data not in catalog.SPECS and (Path(data).is_dir() or os.sep in data):
        return load_image_folder(data, progress=progress)
    spec = catalog.SPECS.get(data)
    folder = catalog.locate(data, data_root,  # raises with the places tried and the remedies
                            progress=progress(f"downloading {data}", "bytes") if progress else None)
    if spec.layout == "idx":
        train, test = load_idx_pair(folder, "train"), load_idx_pair(folder, "t10k")
    elif spec.layout == "cifar-binary":
        from .cifar import load_cifar10
        (trx, try_), (tex, tey) = load_cifar10(folder, classes=spec.classes)
        train, test = TensorSource(trx, try_), TensorSource(tex, tey)
    else:
        bundle = load_image_folder(folder, name=spec.name, classes=list(spec.classes), mean=spec.mean,
                                   std=spec.std, native_size=spec.native_size, progress=progress)
        return bundle
    return DataBundle(spec.name, list(spec.classes), spec.native_size, tuple(spec.mean), tuple(spec.std),
                      train, test)


def peek_native_size(data: str, data_root: str | None = None, sample: int = 20) -> int | None:
    """The native image size without loading the data: the catalog's, or the median short side of
    the first ``sample`` training images of a folder; None when neither is known."""
    spec = catalog.SPECS.get(data)
    if spec:
        return spec.native_size
    train = Path(data) / "train"
    if not train.is_dir():
        return None
    sizes = []
    for path in _image_files(train, limit=sample):
        try:
            with Image.open(path) as im:
                sizes.append(min(im.size))
        except OSError:
            continue
    return int(statistics.median(sizes)) if sizes else None


def count_train_images(data: str) -> int | None:
    """How many image files a folder's train/ holds (by extension, without decoding); None for a
    catalog name, whose size is known once it is loaded."""
    train = Path(data) / "train"
    if data in catalog.SPECS or not train.is_dir():
        return None
    return len(_image_files(train))


def _image_files(top: Path, limit: int | None = None) -> list[str]:
    """Image files under ``top`` by extension, folders and files in name order, at most ``limit``
    (os.walk: pathlib's rglob builds a Path per file, seconds for a 60,000-file folder at start-up)."""
    out = []
    for folder, dirs, files in os.walk(top):
        dirs.sort()
        out += [os.path.join(folder, f) for f in sorted(files)
                if os.path.splitext(f)[1].lower() in EXTENSION_FORMATS]
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out
