"""The index pass over an image folder: decode every file once, keep the good, report the rest.

Every file under ``<split>/<class>/`` is read with ``images.read_image`` in a thread pool (Pillow
releases the GIL while decoding) and gets one row of ``data_report.csv``: loaded with its format,
mode and size, or excluded with the reason (empty, truncated, not an image, mislabelled, oversized,
not an image name). Rows are cached by (path, size, mtime) and the pixel limit, so a second run only
re-reads changed files. A bad JPEG is thus listed at the start instead of stopping a run hours in.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from PIL import Image

from .images import ImageRejected, read_image

log = logging.getLogger("sotakit")


def list_classes(split_dir: Path) -> list[str]:
    """The class folders of ``split_dir``, sorted (torchvision's find_classes order), without hidden ones
    (``.ipynb_checkpoints``, ``.git``: they would become classes); a name that is not valid UTF-8 is
    refused naming it, before any file is read (it would fail later in a report or checkpoint)."""
    names, hidden = [], []
    with os.scandir(split_dir) as it:
        for e in it:
            try:
                is_dir = e.is_dir()  # follows a symlink; a dangling one is no folder
            except OSError:
                is_dir = False
            if not is_dir:
                continue
            if e.name.startswith("."):
                hidden.append(e.name)
                continue
            try:
                e.name.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"class folder {os.fsencode(e.name)!r} in {split_dir} has a name that is "
                                 "not valid UTF-8: rename it (class names go into reports and "
                                 "checkpoints)") from None
            names.append(e.name)
    if hidden:
        log.info(f"note: hidden folders in {split_dir} are not classes and were skipped: "
                 f"{', '.join(sorted(hidden))}")
    if not names:
        raise FileNotFoundError(f"no class folders in {split_dir}: it needs one sub-folder of images per "
                                "class")
    return sorted(names)


def list_files(root: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """Every file under ``root/<class>/`` (sub-folders too, symlinks followed) as (path, class index), in
    torchvision's make_dataset order. Hidden sub-folders are skipped; a folder reached twice through a
    symlink loop is walked once. A class folder without any file is refused, naming the folder and split."""
    out = []
    for name, idx in sorted(class_to_idx.items()):
        top = root / name
        seen, found = set(), []
        for folder, dirs, files in os.walk(top, followlinks=True):
            try:
                st = os.stat(folder)
            except OSError:
                dirs[:] = []
                continue
            if (st.st_dev, st.st_ino) in seen:  # a symlink loop back to a folder already walked
                dirs[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found.append((folder, files))
        files = [(os.path.join(folder, f), idx) for folder, fs in sorted(found) for f in sorted(fs)]
        if not files:
            raise ValueError(f"class folder {top} ({root.name} split) is empty: add its images or remove the "
                             "folder")
        out += files
    return out

def common_root(paths: list[str]) -> str:
    """``os.path.commonpath(paths)`` from the first and last path in sort order only: for file paths
    (none a folder of another) that is the same, and 70,000 paths split one by one take about 1 s."""
    return os.path.commonpath([min(paths), max(paths)]) if paths else ""


def relative_to(paths: list[str], root: str) -> list[str]:
    """``os.path.relpath(p, root)`` of each path; by slicing when ``root`` is an absolute prefix."""
    n = len(root)
    if os.path.isabs(root) and all(p.startswith(root) and p[n:n + 1] == os.sep for p in paths):
        return [p[n + 1:] for p in paths]
    return [os.path.relpath(p, root) for p in paths]


REPORT_COLUMNS = ("path", "split", "class", "status", "reason", "detail", "format", "mode", "width", "height",
                  "bytes")
_CACHE_VERSION = 2  # bump when a row's meaning changes, so old caches are not trusted


def scan_folder(root: Path, class_to_idx: dict[str, int], *, max_pixels: int | None = None, workers: int = 8,
                cache_dir: Path | None = None, progress: Callable[[int, int], None] | None = None,
                ) -> tuple[list[tuple[str, int]], list[dict], list[tuple[int, int]]]:
    """(loadable samples as (path, class index), one report row per file found, each sample's (size in
    bytes, mtime in ns) as the scan saw it), in path order.

    Row paths are relative to ``root.parent`` (the data folder), so they read ``train/cat/1.jpg``. The
    (size, mtime) pairs spare later steps (fingerprint, data cache) a second stat of every file.
    ``progress(files_done, files_total)`` is called after every file (ImageNet: 1.28M files).
    """
    # the limit is part of the cache key
    max_pixels = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    files = list_files(root, class_to_idx)  # all files: none unlisted
    cache_file = _cache_path(root, cache_dir, max_pixels)
    cache = _read_cache(cache_file)
    idx_to_class = {i: c for c, i in class_to_idx.items()}

    def unchanged(path: str) -> dict | None:
        """The cached row of ``path`` if its size and mtime are the ones it was read with."""
        hit = cache.get(path)
        if hit is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None  # check() reports it
        return hit if hit["key"] == f"{st.st_size}:{st.st_mtime_ns}" else None

    def check(item: tuple[str, int]) -> dict:
        path, target = item
        row = {"path": os.path.relpath(path, root.parent), "split": root.name, "class": idx_to_class[target]}
        try:
            st = os.stat(path)
        except OSError as e:  # a dangling symlink, a symlink loop (ELOOP), no permission
            what = "dangling symlink" if os.path.islink(path) and e.errno == errno.ENOENT else e.strerror
            return {**row, "key": None, "bytes": 0, "status": "excluded", "reason": "unreadable",
                    "detail": f"{what}: {e}"}
        row.update(key=f"{st.st_size}:{st.st_mtime_ns}", bytes=st.st_size)
        try:
            _, info = read_image(path, max_pixels=max_pixels)
            row.update(status="loaded", reason="", **info)
        except ImageRejected as e:
            row.update(status="excluded", reason=e.reason, detail=e.detail)
        except OSError as e:  # vanished or unreadable between the listing and the read
            row.update(status="excluded", reason="unreadable", detail=f"{type(e).__name__}: {e}")
        return row

    # Unchanged files first, in this thread: a stat each (a pool's future per file costs more than the
    # stat, 70,000 of them about 1 s); only new or changed files are decoded in the pool.
    rows = [unchanged(path) for path, _ in files]
    todo = [k for k, row in enumerate(rows) if row is None]
    done = len(files) - len(todo)
    if progress is not None and done:
        progress(done, len(files))
    pool = ThreadPoolExecutor(max(1, workers))
    try:
        for k, row in zip(todo, pool.map(check, [files[k] for k in todo])):
            rows[k] = row
            done += 1
            if progress is not None:
                progress(done, len(files))
    finally:  # a stop (signal) mid-scan: the files not yet read are not read
        pool.shutdown(wait=True, cancel_futures=True)
    loaded = [(item, row) for item, row in zip(files, rows) if row["status"] == "loaded"]
    good = [item for item, _ in loaded]
    stats = [tuple(int(v) for v in row["key"].split(":")) for _, row in loaded]
    if todo or len(cache) != len(files):
        _write_cache(cache_file, {path: row for (path, _), row in zip(files, rows)})  # only when it changed
    return good, [{k: row.get(k, "") for k in REPORT_COLUMNS} for row in rows], stats


def write_data_report(path: Path, rows: list[dict]) -> None:
    """``data_report.csv``: one row per file of an image folder, excluded ones with their reason."""
    with open(path, "w", newline="") as f:  # csv.writer on tuples: DictWriter takes 3x as long
        w = csv.writer(f)
        w.writerow(REPORT_COLUMNS)
        w.writerows([row.get(k, "") for k in REPORT_COLUMNS] for row in rows)


def _cache_path(root: Path, cache_dir: Path | None, max_pixels: int | None) -> Path | None:
    if cache_dir is None:
        return None
    ident = f"{root.resolve()}|{max_pixels}|{_CACHE_VERSION}"
    return cache_dir / (hashlib.sha256(ident.encode()).hexdigest()[:16] + ".json")


def _read_cache(cache_file: Path | None) -> dict:
    try:
        return json.loads(cache_file.read_text()) if cache_file and cache_file.exists() else {}
    except (OSError, ValueError):
        return {}


def _write_cache(cache_file: Path | None, cache: dict) -> None:
    if cache_file is None:
        return
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")  # DDP ranks may scan at once
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_file)
    except OSError:
        pass  # the cache is an optimisation only
