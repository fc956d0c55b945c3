"""Checkpoints: never torn, verified before they replace anything, loaded safely.

A save writes a temp file in the same directory (hashing the bytes as they go), fsyncs it, reads it
back to verify the hash, records it in a small manifest (``checkpoints.json``: step, size, SHA-256),
moves the previous checkpoint aside (``checkpoint-prev.pt``) and renames the new one into place, then
fsyncs the directory. A crash at any point leaves a checkpoint whose hash the manifest vouches for;
at start-up stale temp files are removed and the newest verified checkpoint is chosen.

Loading always passes ``weights_only=True`` explicitly (so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot
downgrade it) and ``map_location="cpu"``, with no fallback; a refused file's message names the
globals it wanted. Checkpoints hold tensors and plain types only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.download import fsync_dir, sha256_of
from ..faults import fault_count

LAST, PREV, MANIFEST = "checkpoint-last.pt", "checkpoint-prev.pt", "checkpoints.json"
_TMP_PREFIX, _TMP_SUFFIX = ".checkpoint", ".tmp"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or chosen; the message says what is still intact."""


class WriteError(CheckpointError):
    """Another file of a run (metrics log, TensorBoard events, summary) could not be written: ENOSPC, EIO.
    The same clear stop as a failed checkpoint write (stops.failures_as_run_errors)."""


class _HashingWriter:
    """A file wrapper that hashes what is written and keeps the OS error torch.save would swallow."""

    def __init__(self, f, kill_after: int | None = None):
        self.f, self.sha, self.size, self.error, self.kill_after = f, hashlib.sha256(), 0, None, kill_after

    def write(self, b) -> int:
        if self.kill_after is not None and self.size >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # fault injection (tests only): die mid-write
        try:
            n = self.f.write(b)
        except OSError as e:
            self.error = e
            raise
        self.sha.update(b)
        self.size += len(b)
        return n

    def flush(self) -> None:
        self.f.flush()


def _atomic_write(path: Path, write, *, before_replace=None, kill_after: int | None = None) -> tuple[Path,
                                                                                                     str,
                                                                                                     int]:
    """``write(file)`` to a temp file beside ``path``; fsync, verify, rename over ``path``, fsync the folder.

    Returns (path, sha256, size). ``before_replace(sha, size)`` runs after verification and before
    the rename (the manifest entry and the move of the previous file happen there).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}-{path.stem}.", suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        f = os.fdopen(fd, "wb")
        w = _HashingWriter(f, kill_after=kill_after)
        try:
            write(w)
            f.flush()
            os.fsync(f.fileno())
            f.close()
        except (OSError, RuntimeError) as e:
            with contextlib.suppress(OSError):
                f.close()  # closing flushes the buffer, which fails again on a full disk
            raise CheckpointError(f"could not write {path}: {w.error or e}") from e
        sha = w.sha.hexdigest()
        try:
            same = file_sha256(tmp) == sha  # read back: what is on disk is what was written
        except OSError as e:
            raise CheckpointError(f"could not read back {tmp}: {e}") from e
        if not same:
            raise CheckpointError(f"could not write {path}: the file read back differs from what was written")
        if before_replace is not None:
            before_replace(sha, w.size)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path, sha, w.size


file_sha256 = sha256_of  # the one hash-a-file function (data.download), under the name tests and callers use


def _tensors(obj):
    """Every tensor inside nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def non_finite_keys(state: dict[str, Any]) -> list[str]:
    """Top-level keys of ``state`` holding a NaN or infinite floating-point value."""
    return [k for k, v in state.items()
            if any(t.is_floating_point() and not torch.isfinite(t).all() for t in _tensors(v))]


def check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise CheckpointError(f"not enough free space in {folder} for a checkpoint: about "
                              f"{needed / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free")


def save_checkpoint(state: dict[str, Any], path: str | Path, *, keep_previous: bool = False,
                    meta: dict | None = None) -> Path:
    """Write ``state`` to ``path`` atomically; the file at ``path`` stays intact until the new one is
    verified.

    Refuses a state holding a non-finite value (a NaN checkpoint would rotate healthy ones away) and
    checks the free space first. With ``keep_previous`` the old file becomes ``checkpoint-prev.pt``
    and the manifest beside it records the new file's hash with ``meta`` (epoch, step).
    """
    # By hand: torch.save alone writes in place (a crash tears the file), never verifies, rotates nothing.
    path = Path(path)
    bad = non_finite_keys(state)
    if bad:
        raise CheckpointError(f"refusing to write {path}: non-finite values in {', '.join(bad)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    estimate = sum(t.numel() * t.element_size() for t in _tensors(state)) + (1 << 16)
    check_free_space(path.parent, int(estimate * 1.1))

    kill_after = estimate // 2 if fault_count("kill_in_save") else None  # tests only: die halfway

    def before_replace(sha: str, size: int) -> None:
        if not keep_previous:
            return
        _record(path.parent, {"sha256": sha, "size": size, "time": time.time(), **(meta or {})})
        if path.exists():
            os.replace(path, path.parent / PREV)
    return _atomic_write(path, lambda f: torch.save(state, f), before_replace=before_replace,
                         kill_after=kill_after)[0]


def _record(folder: Path, entry: dict) -> None:
    """Add ``entry`` to the manifest, written atomically. The last 8 entries are kept: the two files
    on disk are among the last two recorded unless saves failed between recording and renaming
    several times in a row (each such failure stops the run)."""
    entries = read_manifest(folder)[-7:] + [entry]
    write_text_atomic(folder / MANIFEST, json.dumps({"checkpoints": entries}, indent=1))


def read_manifest(folder: Path) -> list[dict]:
    """The manifest's entries; [] when it is missing, torn, garbage or of the wrong shape."""
    try:
        entries = json.loads((Path(folder) / MANIFEST).read_text())["checkpoints"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("sha256"), str)]


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temp files a crash left behind (only sotakit's own ``.checkpoint*.tmp``); return them."""
    stale = sorted(Path(folder).glob(f"{_TMP_PREFIX}*{_TMP_SUFFIX}"))
    for p in stale:
        with contextlib.suppress(OSError):
            p.unlink()
    return stale


def choose_checkpoint(folder: str | Path) -> Path:
    """The most recently written checkpoint in a run directory whose SHA-256 the manifest vouches for.

    Without a manifest (runs written by older versions, files copied by hand) ``checkpoint-last.pt``.
    """
    folder = Path(folder)
    candidates = [folder / n for n in (LAST, PREV) if (folder / n).exists()]
    entries = read_manifest(folder)
    if not entries:
        if candidates:
            return candidates[0]
        raise FileNotFoundError(f"no checkpoint in {folder}")
    known = {e["sha256"]: e for e in entries}
    # newest by write time, not by (epoch, step): a forced resume may restart a run's counters
    verified = [(known[s].get("time", 0), p) for p in candidates if (s := file_sha256(p)) in known]
    if not verified:
        raise CheckpointError(f"no checkpoint in {folder} matches its manifest {MANIFEST} "
                              f"(files: {', '.join(p.name for p in candidates) or 'none'}); the files are "
                              "damaged")
    return max(verified, key=lambda v: v[0])[1]


def write_text_atomic(path: str | Path, text: str) -> Path:
    """A small text file (recipe, summary, manifest, run.pid) written like a checkpoint: never torn."""
    return _atomic_write(Path(path), lambda f: f.write(text.encode()))[0]


def copy_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Copy a checkpoint file atomically, without re-serializing it."""
    def copy(f):
        with open(src, "rb") as inp:
            shutil.copyfileobj(inp, f, 1 << 20)
    return _atomic_write(Path(dst), copy)[0]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with ``weights_only=True``: tensors and plain types only, never arbitrary code.

    A run directory resolves to its newest verified checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        return load_newest(path)[1]
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"refused to load {path}: {_refusal_reason(path, e)}") from e


def load_newest(folder: str | Path) -> tuple[Path, dict[str, Any]]:
    """(file, checkpoint) of a run directory: the newest one its manifest vouches for, or, with no usable
    manifest, the first of checkpoint-last.pt and checkpoint-prev.pt that loads. What resume, `eval` and
    `report` read, so a torn last file with a torn manifest costs them one checkpoint, not the run."""
    folder = Path(folder)
    if not read_manifest(folder):
        return _first_loadable(folder)
    path = choose_checkpoint(folder)
    return path, load_checkpoint(path)


def _first_loadable(folder: Path) -> tuple[Path, dict[str, Any]]:
    """No usable manifest (missing, garbage, wrong shape): checkpoint-last.pt, else checkpoint-prev.pt,
    whichever loads (a weights-only load checks the zip's structure and records)."""
    import logging
    candidates = [folder / n for n in (LAST, PREV) if (folder / n).exists()]
    if not candidates:
        raise FileNotFoundError(f"no checkpoint in {folder}")
    errors = []
    for p in candidates:
        try:
            ckpt = load_checkpoint(p)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        if errors:
            logging.getLogger("sotakit").warning(f"note: {errors[0]}; using {p.name} instead (the manifest "
                                                 f"{MANIFEST} is missing or unreadable)")
        return p, ckpt
    raise CheckpointError(f"no checkpoint in {folder} can be loaded and its manifest {MANIFEST} is missing "
                          f"or unreadable: {'; '.join(errors)}")


def _refusal_reason(path: Path, error: Exception) -> str:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint (a raw pickle, a torn file): torch's own words below
        names = []
    if names:
        return (f"it references Python objects a weights-only load does not allow: {', '.join(names)}. "
                "sotakit loads tensors and plain types only; re-save the tensors (state_dict) from a trusted "
                "copy")
    first = str(error).strip().splitlines()
    detail = next((ln for ln in first if "GLOBAL" in ln), first[0] if first else type(error).__name__)
    return f"{detail.strip()} (sotakit never loads with weights_only=False)"


def state_fingerprint(ckpt: dict[str, Any], keys=("model", "ema", "optimizer")) -> str:
    """SHA-256 of the tensors and numbers under ``keys``: equal iff two runs ended in the same state."""
    h = hashlib.sha256()

    def feed(obj, name: str) -> None:
        if isinstance(obj, torch.Tensor):
            h.update(name.encode())
            h.update(obj.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                feed(obj[k], f"{name}/{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                feed(v, f"{name}/{i}")
        else:
            h.update(f"{name}={obj!r}".encode())
    for k in keys:
        feed(ckpt.get(k), k)
    return h.hexdigest()


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
