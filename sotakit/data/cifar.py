"""CIFAR-10 "python version" batches as uint8 tensors, read without running any pickled code.

``pickle.load`` on a downloaded file runs whatever callables the file names, so a tampered batch
could execute arbitrary code. The batches are plain dicts of bytes, ints and lists plus one
numpy array, so ``_DataUnpickler`` refuses every global except the three that rebuild a numpy
array, and maps those to inert local stand-ins that only record the raw bytes, shape and dtype:
no numpy (or any other) code is called, and nothing else can be named by the file.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
NUM_CLASSES = 10
ROW = 3 * 32 * 32  # one image: 1024 red, then 1024 green, then 1024 blue bytes, row-major


class _Array:
    """Stand-in for ``numpy.ndarray``: keeps the pickled state, interprets nothing."""

    def __init__(self, *args: Any) -> None:
        self.shape: tuple = ()
        self.dtype: _DType | None = None
        self.fortran = False
        self.raw: Any = None

    def __setstate__(self, state: tuple) -> None:
        # numpy's ndarray.__reduce__ state: (version, shape, dtype, is_fortran, raw bytes).
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("unexpected array state")
        _, self.shape, self.dtype, self.fortran, self.raw = state


class _DType:
    """Stand-in for ``numpy.dtype``: keeps the type code, e.g. ``b"u1"``."""

    def __init__(self, code: Any = None, *args: Any) -> None:
        self.code = code.decode("latin1") if isinstance(code, bytes) else code

    def __setstate__(self, state: Any) -> None:
        pass  # byte order etc.; irrelevant for the single-byte dtype we accept


def _reconstruct(*args: Any) -> _Array:
    return _Array()


# The only globals a genuine CIFAR batch names (numpy 2 renamed numpy.core to numpy._core).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _Array,
    ("numpy", "dtype"): _DType,
}


class _DataUnpickler(pickle.Unpickler):
    """Unpickler that builds only builtin containers/scalars and the inert array stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        # Every callable a pickle can invoke (os.system, builtins.eval, ...) is looked up here.
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: "
                                         "a data file may not name code") from None


def load_pickle(path: Path) -> Any:
    """Load a data-only pickle (Python 2 protocol, as CIFAR ships) with ``_DataUnpickler``."""
    with open(path, "rb") as f:
        # encoding="bytes": CIFAR was pickled by Python 2, whose str may hold arbitrary bytes.
        return _DataUnpickler(f, encoding="bytes").load()


def _read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 batch {path} is missing; delete {path.parent} to download it again")
    try:
        batch = load_pickle(path)
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError) as e:
        raise ValueError(f"{path} is corrupt or not a CIFAR-10 python batch ({e}); delete {path.parent} "
                         f"to download it again") from e
    try:
        return _decode(batch)
    except ValueError as e:
        raise ValueError(f"{path}: {e}; delete {path.parent} to download it again") from e


def _decode(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, dict):
        raise ValueError(f"expected a dict, found {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"no 'data'/'labels' entries (keys: {sorted(map(str, batch))})")
    data, labels = batch["data"], batch["labels"]

    if isinstance(data, _Array):
        if data.dtype is None or data.dtype.code not in ("u1", "|u1", "B") or data.fortran:
            raise ValueError(f"data is not a C-ordered uint8 array (dtype {getattr(data.dtype, 'code', None)!r})")
        if len(data.shape) != 2 or data.shape[1] != ROW:
            raise ValueError(f"data has shape {data.shape}, expected (N, {ROW})")
        raw = data.raw.encode("latin1") if isinstance(data.raw, str) else data.raw
    elif isinstance(data, (bytes, bytearray)):
        raw = data
    else:
        raise ValueError(f"data is a {type(data).__name__}, expected a uint8 array")
    if not isinstance(raw, (bytes, bytearray)) or len(raw) % ROW:
        raise ValueError(f"data holds {len(raw) if isinstance(raw, (bytes, bytearray)) else '?'} bytes, "
                         f"not a multiple of {ROW}")
    n = len(raw) // ROW
    if isinstance(data, _Array) and data.shape[0] != n:
        raise ValueError(f"data claims {data.shape[0]} images but holds bytes for {n}")

    if not isinstance(labels, (list, tuple)) or not all(type(y) is int for y in labels):
        raise ValueError("labels are not a list of ints")
    if len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels")
    if labels and not 0 <= min(labels) <= max(labels) < NUM_CLASSES:
        raise ValueError(f"labels outside 0..{NUM_CLASSES - 1}")

    images = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(n, 3, 32, 32)
    return images, torch.tensor(labels, dtype=torch.int64)


def load_cifar10(folder: Path) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Read the ``cifar-10-batches-py`` folder.

    Args:
        folder: Folder holding ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``.

    Returns:
        ``((train_x, train_y), (test_x, test_y))``: images uint8 ``N x 3 x 32 x 32``, labels int64.

    Raises:
        FileNotFoundError: A batch is missing.
        ValueError: A batch is corrupt, has unexpected shapes, or names code (refused unpickling).
    """
    folder = Path(folder)
    train = [_read_batch(folder / b) for b in TRAIN_BATCHES]
    test_x, test_y = _read_batch(folder / TEST_BATCH)
    train_x = torch.cat([x for x, _ in train])
    train_y = torch.cat([y for _, y in train])
    return (train_x, train_y), (test_x, test_y)
