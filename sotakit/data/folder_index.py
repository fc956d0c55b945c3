"""The index pass over an image folder: decode every file once, keep the good, report the rest.

Every file under ``<split>/<class>/`` is read with ``images.read_image`` in a thread pool (Pillow
releases the GIL while decoding) and gets one row of ``data_report.csv``: loaded with its format,
mode and size, or excluded with the reason (empty, truncated, not an image, mislabelled, oversized,
not an image name). Rows are cached by (path, size, mtime) and the pixel limit, so a second run only
re-reads changed files. A bad JPEG is thus listed at the start instead of stopping a run hours in.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from PIL import Image
from torchvision.datasets.folder import make_dataset

from .images import ImageRejected, read_image

REPORT_COLUMNS = ("path", "split", "class", "status", "reason", "detail", "format", "mode", "width", "height",
                  "bytes")
_CACHE_VERSION = 2  # bump when a row's meaning changes, so old caches are not trusted


def scan_folder(root: Path, class_to_idx: dict[str, int], *, max_pixels: int | None = None, workers: int = 8,
                cache_dir: Path | None = None, progress: Callable[[int, int], None] | None = None,
                ) -> tuple[list[tuple[str, int]], list[dict]]:
    """(loadable samples as (path, class index), one report row per file found), in path order.

    Row paths are relative to ``root.parent`` (the data folder), so they read ``train/cat/1.jpg``.
    ``progress(files_done, files_total)`` is called after every file (ImageNet: 1.28M files).
    """
    # the limit is part of the cache key
    max_pixels = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    files = make_dataset(str(root), class_to_idx, is_valid_file=lambda p: True)  # all files: none unlisted
    cache_file = _cache_path(root, cache_dir, max_pixels)
    cache = _read_cache(cache_file)
    idx_to_class = {i: c for c, i in class_to_idx.items()}

    def check(item: tuple[str, int]) -> dict:
        path, target = item
        st = os.stat(path)
        key = f"{st.st_size}:{st.st_mtime_ns}"
        hit = cache.get(path)
        if hit and hit["key"] == key:
            return hit
        row = {"key": key, "path": os.path.relpath(path, root.parent), "split": root.name,
               "class": idx_to_class[target], "bytes": st.st_size}
        try:
            _, info = read_image(path, max_pixels=max_pixels)
            row.update(status="loaded", reason="", **info)
        except ImageRejected as e:
            row.update(status="excluded", reason=e.reason, detail=e.detail)
        return row

    with ThreadPoolExecutor(max(1, workers)) as pool:
        rows = []
        for i, row in enumerate(pool.map(check, files), 1):
            rows.append(row)
            if progress is not None:
                progress(i, len(files))
    good = [(path, target) for (path, target), row in zip(files, rows) if row["status"] == "loaded"]
    _write_cache(cache_file, {path: row for (path, _), row in zip(files, rows)})
    return good, [{k: row.get(k, "") for k in REPORT_COLUMNS} for row in rows]


def write_data_report(path: Path, rows: list[dict]) -> None:
    """``data_report.csv``: one row per file of an image folder, excluded ones with their reason."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=REPORT_COLUMNS)
        w.writeheader()
        w.writerows(rows)


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
