"""A data set's fingerprint: SHA-256 of what a run trained and was tested on.

Folder data: the sorted (relative path, size in bytes, class name) list of each split, so a renamed,
added, removed, relabelled or rewritten (different size) file changes it, while moving the whole
tree elsewhere does not. Hashing every image's bytes would read all of ImageNet; the size is a stat.
The sizes are the scan's (``FolderSource.stats``) when it kept them, so a 60,000-file folder is not
stat-ed twice at start-up. A folder held in the data cache (``image_cache.CachedFolderSource``)
fingerprints as the folder it came from. In-memory data: the image and label tensors themselves.
Used by the report and by resume checks.
"""

from __future__ import annotations

import hashlib
import os

import torch

from .datasets import DataBundle, FolderSource, TensorSource
from .folder_index import common_root, relative_to
from .image_cache import CachedFolderSource


def data_fingerprint(bundle: DataBundle) -> str:
    """Hex SHA-256 over the class names and both splits (train, then test) of ``bundle``."""
    h = hashlib.sha256()
    h.update("\n".join(bundle.classes).encode() + b"\0")
    sources = (bundle.train, bundle.test)
    root = _common_root(sources)
    for split, source in zip(("train", "test"), sources):
        h.update(f"[{split}]".encode())
        if isinstance(source, (FolderSource, CachedFolderSource)):
            sizes = ([size for size, _ in source.stats] if source.stats is not None
                     else [os.path.getsize(p) for p, _ in source.samples])
            rels = relative_to([p for p, _ in source.samples], root)
            rows = sorted((rel, size, bundle.classes[t])
                          for rel, (_, t), size in zip(rels, source.samples, sizes))
            for rel, size, label in rows:
                h.update(f"{rel}\t{size}\t{label}\n".encode())
        elif isinstance(source, TensorSource):
            h.update(_tensor_bytes(source.images))
            h.update(_tensor_bytes(source.targets))
        else:
            raise TypeError(f"cannot fingerprint a {type(source).__name__}: expected TensorSource or "
                            "FolderSource")
    return h.hexdigest()


def _common_root(sources) -> str:
    paths = [p for s in sources if isinstance(s, (FolderSource, CachedFolderSource)) for p, _ in s.samples]
    return common_root(paths)


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().cpu().numpy().tobytes()
