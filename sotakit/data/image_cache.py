"""The data cache: an image folder decoded once into presized uint8 arrays, memory-mapped by later runs.

fastai's presizing (fastbook ch. 5): resize every image once to a size larger than the training crop,
then augment at the final size. Here the decoded, presized images are kept on disk, so later runs
and every epoch skip PNG/JPEG decoding, and the folder trains as in-memory data does (the batch
crop/flip path of ``batch_augment.py``, with its documented difference from per-image torchvision).

The presize rule (``presize_for``):

* **test split** (evaluated with Resize(val_resize) + CenterCrop(val_crop)): the short side resized to
  ``val_resize_size`` with the recipe's interpolation, exactly as the eval transform resizes, then cropped
  to a square of that side around the evaluation crop. Evaluating the cached image (its Resize is then a
  no-op) gives, bit for bit, the crop the uncached path evaluates.
* **train split** (RandomResizedCrop to ``train_crop_size``): side ``min(native, max(val_resize, 2 x
  train_crop))``: twice the crop as fastai presizes (460 for 224), and at least the eval size, since
  the holdout split is evaluated from these images; but never more than the folder's median short
  side (``native_size``): more pixels than the files hold buys nothing, and images of that size
  are then stored as they are (square ones exactly, not resampled at all).

What differs from decoding the original file each time: a non-square image keeps only its centre
square (the short side's length), so training crops never reach the cut-off sides (for eval that
part is cut off anyway); training crops are taken from the presized image, so a crop that would have
been shrunk from a larger original, or enlarged from a smaller one, is resampled twice; the holdout
split is resized twice (files -> train size -> val_resize) unless its images have the native size; TTA's
augmented views are drawn from the cached test images. Progressive resizing works (its largest crop is
the train crop); tools that evaluate at other sizes (``sotakit tune-resize``) read the files.

The arrays are NumPy ``.npy`` files opened with ``np.load(mmap_mode="c")``: the header records dtype
and shape, a short or torn file fails to map, and the pages are shared with DataLoader workers and
across runs through the page cache; ``torch.from_numpy`` wraps them without a copy (copy-on-write, so
nothing is ever written back). safetensors would need a dependency; ``torch.from_file`` has no header.
A cache directory is named by the data fingerprint and the presize, built under a temporary name and
renamed into place when complete, with a manifest that a later run verifies before trusting it: the
classes, each file's path, size, mtime and label (the ``stamp``), the array shapes, and a digest of
64 evenly spaced images. Anything else is rebuilt, with the reason logged. A build removes the caches
of the same folder's earlier contents at the same presize (each would be as large, and never used).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from .datasets import DataBundle, FolderSource, ProgressFor, TensorSource, check_decode_errors
from .folder_index import common_root, relative_to
from .transforms import INTERPOLATION

log = logging.getLogger("sotakit")

CACHE_MODES = ("auto", "on", "off")
CACHE_VERSION = 1  # bump when the layout or the presize rule changes, so old caches are not trusted
SPOT_CHECKS = 64  # images whose bytes the manifest digests: catches a torn or overwritten array cheaply
FIT_FRACTION = 0.5  # "auto" builds only a cache within half the free disk and half the RAM
CHUNK = 64  # images per decode task


class CacheInvalid(Exception):
    """A cache directory that must not be trusted; the message says why (logged, then rebuilt)."""


class CachedFolderSource(TensorSource):
    """A folder's images as presized uint8 arrays: in-memory data for the loaders, the folder's files
    (``samples``, ``stats``) for the fingerprint. ``load(i)`` returns the image and the index it came
    from: a file that failed to decode at build time holds the next readable one, as FolderSource does."""

    def __init__(self, images: torch.Tensor, samples: list[tuple[str, int]],
                 stats: list[tuple[int, int]] | None, origin: dict[int, int]):
        super().__init__(images, torch.tensor([t for _, t in samples], dtype=torch.long))
        self.samples, self.stats, self.origin = samples, stats, origin

    def decode_errors(self) -> int:
        """Files that failed to decode when the cache was built."""
        return len(self.origin)

    def load(self, i: int):
        return tv_tensors.Image(self.images[i]), self.origin.get(i, i)


@dataclass(frozen=True)
class Presize:
    """Side of the cached square images of each split, the eval crop they are aligned to, and how they
    were resized."""

    train: int
    test: int
    align: int
    interpolation: str

    def name(self) -> str:
        return f"{self.train}-{self.test}-{self.align}-{self.interpolation}"


def presize_for(*, train_crop_size: int, val_resize_size: int, val_crop_size: int, native_size: int,
                interpolation: str = "bilinear") -> Presize:
    """The presize rule of the module docstring."""
    train = min(native_size, max(val_resize_size, 2 * train_crop_size))
    return Presize(train, val_resize_size, min(val_crop_size, val_resize_size), interpolation)


def presize_image(image, size: int, *, align: int, interpolation: str = "bilinear") -> torch.Tensor:
    """``image`` (PIL or uint8 CHW) as a uint8 (3, size, size) tensor: short side resized to ``size`` as
    ``make_eval_transform`` resizes, then the square around the centred ``align`` x ``align`` crop,
    placed so that CenterCrop(align) of the result equals CenterCrop(align) of the resized image
    (two rounded centre offsets do not add up to one, so the square's offset is derived from both)."""
    x = F.resize(F.to_image(image), [size], interpolation=INTERPOLATION[interpolation], antialias=True)
    h, w = x.shape[-2:]
    top = _square_offset(h, size, align)
    left = _square_offset(w, size, align)
    return x[..., top:top + size, left:left + size].contiguous()


def _square_offset(length: int, size: int, align: int) -> int:
    """Offset of a ``size`` window along ``length`` such that torchvision's centre offset of ``align``
    inside it lands where its centre offset of ``align`` inside ``length`` does."""
    want = int(round((length - align) / 2.0)) - int(round((size - align) / 2.0))
    return min(max(want, 0), length - size)


def cache_root() -> Path:
    """Where data caches live: $XDG_CACHE_HOME/sotakit/images (as the scan and stats caches)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sotakit" / "images"


def source_stamp(sources: tuple[FolderSource, FolderSource], classes: list[str]) -> str:
    """SHA-256 over the classes and each split's (relative path, size, mtime, label) in sample order."""
    root = common_root([p for s in sources for p, _ in s.samples])
    h = hashlib.sha256(("\n".join(classes) + "\0").encode())
    for split, source in zip(("train", "test"), sources):
        stats = source.stats if source.stats is not None else [_stat(p) for p, _ in source.samples]
        h.update(f"[{split}]".encode())
        rels = relative_to([p for p, _ in source.samples], root)
        h.update("".join(f"{rel}\t{size}\t{mtime}\t{t}\n"
                         for rel, (_, t), (size, mtime) in zip(rels, source.samples, stats)).encode())
    return h.hexdigest()


def _stat(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def spot_digest(images: np.ndarray) -> str:
    """SHA-256 of SPOT_CHECKS evenly spaced images (first and last included)."""
    n = len(images)
    rows = np.unique(np.linspace(0, n - 1, min(n, SPOT_CHECKS)).round().astype(np.int64)) if n else []
    h = hashlib.sha256(str(images.shape).encode())
    for i in rows:
        h.update(np.ascontiguousarray(images[i]).tobytes())
    return h.hexdigest()


def cached_bundle(bundle: DataBundle, *, mode: str = "auto", fingerprint: str, train_crop_size: int,
                  val_resize_size: int, val_crop_size: int, interpolation: str = "bilinear",
                  max_decode_errors: float = 0.01, progress: ProgressFor | None = None,
                  root: Path | None = None, build: bool = True) -> tuple[DataBundle, str | None]:
    """``bundle`` with its folder splits replaced by the data cache, and the run note saying what happened
    (hit, built, rebuilt and why, or not used and why); in-memory data sets come back as they are, with
    no note. ``mode``: "auto" (use or build it when it fits, see FIT_FRACTION), "on" (build it whatever
    its size), "off". A file that fails to decode at build time counts against ``max_decode_errors``
    as during a run (DecodeErrorLimit past it). ``build=False``: a valid cache is used, a missing or
    stale one is neither built nor removed (`sotakit eval` reads the cache the run evaluated on, and
    never decodes a whole training split to evaluate a test split)."""
    if mode not in CACHE_MODES:
        raise ValueError(f"data cache mode {mode!r}: use one of {', '.join(CACHE_MODES)}")
    if not (isinstance(bundle.train, FolderSource) and isinstance(bundle.test, FolderSource)):
        return bundle, None
    if mode == "off":
        return bundle, "data cache: off (--data-cache off): images are decoded from the files every epoch"
    if not len(bundle.train) or not len(bundle.test):
        return bundle, None
    t0 = time.perf_counter()
    size = presize_for(train_crop_size=train_crop_size, val_resize_size=val_resize_size,
                       val_crop_size=val_crop_size, native_size=bundle.native_size,
                       interpolation=interpolation)
    folder = (root or cache_root()) / f"{fingerprint[:32]}-{size.name()}"
    stamp = source_stamp((bundle.train, bundle.test), bundle.classes)
    expected = {"version": CACHE_VERSION, "fingerprint": fingerprint, "stamp": stamp,
                "classes": list(bundle.classes), "presize": size.__dict__,
                "root": common_root([p for s in (bundle.train, bundle.test) for p, _ in s.samples])}
    shapes = {"train": [len(bundle.train), 3, size.train, size.train],
              "test": [len(bundle.test), 3, size.test, size.test]}
    rebuild = ""
    if folder.exists():
        try:
            train, test = open_cache(folder, expected, shapes, bundle)
            check_all(train, test, max_decode_errors)
            mb = sum(np.prod(s) for s in shapes.values()) / 1e6
            return replace(bundle, train=train, test=test), (
                f"data cache: hit, {len(train)} train images at {size.train} px and {len(test)} test images "
                f"at {size.test} px ({mb:.0f} MB) memory-mapped from {folder} in "
                f"{time.perf_counter() - t0:.2f}s")
        except CacheInvalid as e:
            rebuild = f"{e}; "
            log.info(f"data cache {folder} not used: {e}; building it again")
    if not build:
        return bundle, f"data cache: {rebuild or 'none '}for these sizes: images are read from the files"
    nbytes = sum(int(np.prod(s)) for s in shapes.values())
    too_big = _too_big(nbytes, folder.parent)
    if too_big and mode == "auto":
        return bundle, (f"data cache: not built, {too_big}: images are decoded from the files every epoch "
                        "(--data-cache on builds it anyway, --data-cache off silences this note)")
    try:
        build_cache(folder, expected, bundle, size, progress=progress)
        train, test = open_cache(folder, expected, shapes, bundle)
        _remove_superseded(folder, data_root=expected["root"])
    except (OSError, CacheInvalid) as e:  # a full disk, a read-only cache folder: train from the files
        return bundle, (f"data cache: could not be written ({e}): images are decoded from the files every "
                        "epoch")
    check_all(train, test, max_decode_errors)
    return replace(bundle, train=train, test=test), (
        f"data cache: {'re' if rebuild else ''}built ({rebuild}{len(train) + len(test)} images decoded, "
        f"{len(train)} train at {size.train} px, {len(test)} test at {size.test} px, {nbytes / 1e6:.0f} MB "
        f"in {folder}) in {time.perf_counter() - t0:.1f}s; later runs memory-map it")


def check_all(train: CachedFolderSource, test: CachedFolderSource, max_decode_errors: float) -> None:
    for source in (train, test):
        check_decode_errors(source, max_decode_errors)


def _too_big(nbytes: int, where: Path) -> str:
    """Why a cache of ``nbytes`` does not fit ("" when it does)."""
    probe = where
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if nbytes > FIT_FRACTION * free:
        return f"{nbytes / 1e9:.1f} GB would exceed half the free disk at {probe} ({free / 1e9:.1f} GB)"
    if nbytes > FIT_FRACTION * ram:
        return f"{nbytes / 1e9:.1f} GB would exceed half the RAM ({ram / 1e9:.1f} GB)"
    return ""


def open_cache(folder: Path, expected: dict, shapes: dict, bundle: DataBundle,
               ) -> tuple[CachedFolderSource, CachedFolderSource]:
    """The two cached splits of ``folder``, after checking its manifest against ``expected``; raises
    CacheInvalid saying what does not match."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise CacheInvalid(f"no readable manifest ({type(e).__name__})") from None
    for key, want in expected.items():
        if manifest.get(key) != want:
            what = "files changed since it was built" if key == "stamp" else f"another {key}"
            raise CacheInvalid(what)
    sources = []
    for split, source in (("train", bundle.train), ("test", bundle.test)):
        entry = manifest.get("splits", {}).get(split, {})
        try:
            images = np.load(folder / f"{split}.npy", mmap_mode="c")
        except (OSError, ValueError, EOFError) as e:  # missing, truncated (the map is longer than the file)
            raise CacheInvalid(f"{split}.npy is torn or missing ({e})") from None
        if [list(images.shape), entry.get("shape")] != [shapes[split]] * 2 or images.dtype != np.uint8:
            raise CacheInvalid(f"{split}.npy holds {images.shape}, expected {tuple(shapes[split])}")
        if spot_digest(images) != entry.get("digest"):
            raise CacheInvalid(f"{split}.npy does not hold the images it was built with (torn or "
                               "overwritten)")
        origin = {int(i): int(j) for i, j in entry.get("origin", {}).items()}
        sources.append(CachedFolderSource(torch.from_numpy(images), source.samples, source.stats, origin))
    return sources[0], sources[1]


def build_cache(folder: Path, expected: dict, bundle: DataBundle, size: Presize, *,
                progress: ProgressFor | None = None) -> None:
    """Decode and presize every image of both splits into ``folder``: written under a temporary name,
    flushed, then renamed into place, so a crash leaves either no cache or a complete one."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(folder.parent)
    tmp = folder.parent / f".tmp-{os.getpid()}-{folder.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        splits = {}
        for split, source, side in (("train", bundle.train, size.train), ("test", bundle.test, size.test)):
            t0 = time.perf_counter()
            images, origin = _decode_split(source, tmp / f"{split}.npy", side, size, progress and progress(
                f"caching {split} images at {side} px", "images"))
            splits[split] = {"shape": list(images.shape), "digest": spot_digest(images),
                             "origin": {str(i): j for i, j in origin.items()},
                             "build_s": round(time.perf_counter() - t0, 2)}
            del images
        manifest = {**expected, "splits": splits, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with open(tmp / "manifest.json", "w") as f:
            json.dump(manifest, f)
            f.flush()
            os.fsync(f.fileno())
        if folder.exists():  # stale: moved aside first (a rename cannot replace a non-empty folder)
            old = folder.parent / f".tmp-{os.getpid()}-old-{folder.name}"
            os.replace(folder, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "manifest.json").exists():  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _decode_split(source: FolderSource, path: Path, side: int, size: Presize, progress,
                  ) -> tuple[np.ndarray, dict[int, int]]:
    """Every image of ``source`` presized into a new ``.npy`` at ``path``; (array, {index: index it holds}
    for files that failed to decode). Threads: Pillow and torch release the GIL while they work."""
    n = len(source)
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 3, side, side))
    origin: dict[int, int] = {}

    def chunk(start: int) -> int:
        for i in range(start, min(start + CHUNK, n)):
            image, j = source.load(i)  # a file that fails now is marked and replaced, as in a run
            if j != i:
                origin[i] = j
            images[i] = presize_image(image, side, align=size.align, interpolation=size.interpolation).numpy()
        return min(start + CHUNK, n) - start

    done = 0
    workers = max(1, min(8, len(os.sched_getaffinity(0))))
    with ThreadPoolExecutor(workers) as pool:
        for k in pool.map(chunk, range(0, n, CHUNK)):
            done += k
            if progress is not None:
                progress(done, n)
    images.flush()
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    return images, origin


def _remove_superseded(folder: Path, *, data_root: str) -> None:
    """Caches of the same data folder at the same presize built from its earlier contents (another
    fingerprint): never used again, and each as large as this one."""
    for other in folder.parent.glob(f"*-{folder.name.split('-', 1)[1]}"):
        if other == folder:
            continue
        try:
            superseded = json.loads((other / "manifest.json").read_text()).get("root") == data_root
        except (OSError, ValueError):
            continue
        if superseded:
            shutil.rmtree(other, ignore_errors=True)


def _remove_abandoned(where: Path) -> None:
    """Temporary folders of builds whose process is gone (killed mid-build)."""
    for p in where.glob(".tmp-*"):
        try:
            pid = int(p.name.split("-")[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue
