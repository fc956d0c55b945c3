"""Checkpoints: written atomically, loaded safely, RNG states captured as plain tensors and types.

Atomic write: temp file in the same directory, fsync, ``os.replace``, fsync of the directory, so a
crash leaves either the old file or the new one, never a torn one. Loading always passes
``weights_only=True`` (no arbitrary pickles) and ``map_location="cpu"``.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _atomic_write(path: Path, write) -> Path:
    """Call ``write(file)`` on a temp file beside ``path``, fsync, rename over ``path``, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically; the previous file stays intact until the rename."""
    return _atomic_write(Path(path), lambda f: torch.save(state, f))


def copy_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Copy a checkpoint file atomically, without re-serializing it."""
    def copy(f):
        with open(src, "rb") as inp:
            shutil.copyfileobj(inp, f, 1 << 20)
    return _atomic_write(Path(dst), copy)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with ``weights_only=True``: tensors and plain types only, never arbitrary code."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint-last.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"refused to load {path}: {e}") from e


def rng_state() -> dict[str, Any]:
    """Every RNG a run draws from, as tensors and plain types (weights_only-safe)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_gauss": random.getstate()[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_rest": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), *state["numpy_rest"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
