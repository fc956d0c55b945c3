"""CIFAR-10 as uint8 tensors, read from the data set's binary version: no pickle, no code can run.

``cifar-10-binary.tar.gz`` unpacks to ``cifar-10-batches-bin/``: ``data_batch_1.bin`` ..
``data_batch_5.bin`` and ``test_batch.bin``, each a run of fixed-size records of 1 label byte and
3,072 pixel bytes (the 1,024 red, then green, then blue values of a 32x32 image, row-major), and
``batches.meta.txt`` with the class names one per line in label order
(https://www.cs.toronto.edu/~kriz/cifar.html, "Binary version"). Reading it is slicing bytes.

Legacy: a ``cifar-10-batches-py`` folder (the "python version", which sotakit downloaded before)
that is already on disk is still read. ``pickle.load`` on it would run whatever callables the file
names, so ``_DataUnpickler`` refuses every global except the three that rebuild a numpy array, and
maps those to inert local stand-ins that only record the raw bytes, shape and dtype: no numpy (or
any other) code is called, and nothing else can be named by the file. That path exists only for
copies already on disk; nothing downloads the python version any more.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

BINARY_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
BINARY_TEST = "test_batch.bin"
BINARY_META = "batches.meta.txt"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))  # legacy python version
TEST_BATCH = "test_batch"
NUM_CLASSES = 10
ROW = 3 * 32 * 32  # one image: 1024 red, then 1024 green, then 1024 blue bytes, row-major
RECORD = 1 + ROW  # binary version: the label byte, then the image

Split = tuple[torch.Tensor, torch.Tensor]


def load_cifar10(folder: Path, classes: Sequence[str] | None = None) -> tuple[Split, Split]:
    """Read a ``cifar-10-batches-bin`` folder, or a legacy ``cifar-10-batches-py`` one.

    The binary version is read whenever ``data_batch_1.bin`` is there or the python version's
    ``data_batch_1`` is not.

    Args:
        folder: Folder holding the five training batches and the test batch.
        classes: Expected class names in label order; checked against ``batches.meta.txt`` when the
            folder has one (binary version).

    Returns:
        ``((train_x, train_y), (test_x, test_y))``: images uint8 ``N x 3 x 32 x 32``, labels int64.

    Raises:
        FileNotFoundError: A batch is missing.
        ValueError: A batch is corrupt or has unexpected sizes or labels; the class names differ from
            ``classes``; a legacy python batch names code (refused unpickling).
    """
    folder = Path(folder)
    binary = (folder / BINARY_TRAIN[0]).is_file() or not (folder / TRAIN_BATCHES[0]).is_file()
    if binary:
        if classes is not None and (folder / BINARY_META).is_file():
            _check_classes(folder / BINARY_META, classes)
        read, names = _read_binary_batch, (*BINARY_TRAIN, BINARY_TEST)
    else:
        read, names = _read_batch, (*TRAIN_BATCHES, TEST_BATCH)
    train = [read(folder / b) for b in names[:-1]]
    test_x, test_y = read(folder / names[-1])
    train_x = torch.cat([x for x, _ in train])
    train_y = torch.cat([y for _, y in train])
    return (train_x, train_y), (test_x, test_y)


def read_class_names(path: Path) -> list[str]:
    """The class names of ``batches.meta.txt``, one per non-empty line (the file ends in blank lines)."""
    return [line.strip() for line in Path(path).read_text(encoding="ascii").splitlines() if line.strip()]


def _check_classes(path: Path, classes: Sequence[str]) -> None:
    try:
        found = read_class_names(path)
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is unreadable ({e}); delete {path.parent} to download it again") from e
    if found != list(classes):
        raise ValueError(f"{path} names the classes {found}, expected CIFAR-10's {list(classes)}: "
                         f"{path.parent} holds another data set; delete it to download CIFAR-10 again")


def _read_binary_batch(path: Path) -> Split:
    """One binary batch: records of a label byte and ``ROW`` pixel bytes."""
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 batch {path} is missing; "
                                f"delete {path.parent} to download it again")
    raw = bytearray(path.read_bytes())
    if not raw or len(raw) % RECORD:
        raise ValueError(f"{path} holds {len(raw)} bytes, not a whole number of {RECORD}-byte CIFAR-10 "
                         f"records; delete {path.parent} to download it again")
    records = torch.frombuffer(raw, dtype=torch.uint8).view(-1, RECORD)
    labels = records[:, 0].to(torch.int64)
    if labels.max().item() >= NUM_CLASSES:
        bad = int(torch.nonzero(labels >= NUM_CLASSES)[0])
        raise ValueError(f"{path}: record {bad} has label {int(labels[bad])}, outside 0..{NUM_CLASSES - 1}; "
                         f"delete {path.parent} to download it again")
    # clone: the images get their own contiguous storage instead of a strided view into ``raw``.
    return records[:, 1:].reshape(-1, 3, 32, 32).clone(), labels


# --- legacy: the python version, already on disk -------------------------------------------------
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
        raise FileNotFoundError(f"CIFAR-10 batch {path} is missing; delete {path.parent} "
                                "to download it again")
    try:
        batch = load_pickle(path)
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError,
            KeyError) as e:
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
            raise ValueError("data is not a C-ordered uint8 array (dtype "
                             f"{getattr(data.dtype, 'code', None)!r})")
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
