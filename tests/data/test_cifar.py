"""CIFAR-10's binary version decodes to the exact pixels and labels; a legacy python folder on disk
is still found and read offline; concurrent locates download once (the data-root lock)."""

from __future__ import annotations

import random
import tarfile
import threading

import pytest
import torch

from sotakit.data import catalog
from sotakit.data.catalog import locate
from sotakit.data.cifar import load_cifar10, read_class_names
from sotakit.data.datasets import load_data

try:  # tests/data as a package, or plain rootdir-relative modules
    from .test_catalog import (
        cifar_archive,
        cifar_binary_archive,
        cifar_records,
        cifar_tree,
        isolated,  # noqa: F401 - autouse: no real cache or environment leaks in
        pin,
    )
    from .test_download import RangeServer, dead_url
except ImportError:
    from test_catalog import (
        cifar_archive,
        cifar_binary_archive,
        cifar_records,
        cifar_tree,
        isolated,  # noqa: F401
        pin,
    )
    from test_download import RangeServer, dead_url

CLASSES = catalog.SPECS["cifar10"].classes


def binary_folder(folder, tree):
    """An unpacked ``cifar-10-batches-bin`` folder."""
    folder.mkdir(parents=True)
    for name, (raw, labels) in tree.items():
        (folder / f"{name}.bin").write_bytes(cifar_records(raw, labels))
    (folder / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n\n")
    return folder


def planes_image(red: int, green: int, blue: int, marked: tuple[int, int], mark: int) -> bytes:
    """One image: constant planes, with the red value at (row, col) ``marked`` set to ``mark``."""
    r = bytearray([red] * 1024)
    r[marked[0] * 32 + marked[1]] = mark
    return bytes(r) + bytes([green] * 1024) + bytes([blue] * 1024)


def test_binary_records_decode_to_exact_pixels_and_labels(tmp_path):
    tree = cifar_tree(n=3)
    # The test batch: two images whose planes and one marked pixel say where every byte must land.
    tree["test_batch"] = (planes_image(255, 0, 128, (1, 2), 7) + planes_image(1, 2, 3, (31, 0), 99), [3, 9])
    folder = binary_folder(tmp_path / "cifar-10-batches-bin", tree)
    (train_x, train_y), (test_x, test_y) = load_cifar10(folder, classes=CLASSES)

    assert test_x.dtype == torch.uint8 and test_x.shape == (2, 3, 32, 32) and test_x.is_contiguous()
    assert test_y.dtype == torch.int64 and test_y.tolist() == [3, 9]
    assert test_x[0, :, 0, 0].tolist() == [255, 0, 128]  # R, G, B of the top-left pixel
    assert test_x[0, :, 1, 2].tolist() == [7, 0, 128]  # row 1, column 2: rows are 32 bytes
    assert test_x[1, :, 31, 0].tolist() == [99, 2, 3] and test_x[1, 0, 30, 31].item() == 1
    assert int((test_x[0, 0] == 7).sum()) == 1  # the label byte did not shift any pixel

    assert train_x.shape == (15, 3, 32, 32) and train_y.dtype == torch.int64
    expect = b"".join(tree[f"data_batch_{i}"][0] for i in range(1, 6))
    assert bytes(train_x.flatten().tolist()) == expect
    assert train_y.tolist() == sum((tree[f"data_batch_{i}"][1] for i in range(1, 6)), [])


def test_load_data_reads_binary_cifar_offline(tmp_path):
    tree = cifar_tree(n=2)
    binary_folder(tmp_path / "root" / "cifar10" / "cifar-10-batches-bin", tree)
    bundle = load_data("cifar10", str(tmp_path / "root"))
    assert bundle.classes == list(CLASSES) and bundle.native_size == 32
    assert len(bundle.train) == 10 and len(bundle.test) == 2
    assert bytes(bundle.test.images.flatten().tolist()) == tree["test_batch"][0]
    assert bundle.test.targets.tolist() == tree["test_batch"][1]


def test_class_names_come_from_the_meta_file(tmp_path):
    folder = binary_folder(tmp_path / "bin", cifar_tree(n=1))
    assert read_class_names(folder / "batches.meta.txt") == list(CLASSES)
    (folder / "batches.meta.txt").write_text("apple\naquarium_fish\n" + "x\n" * 8)  # CIFAR-100-like
    with pytest.raises(ValueError, match="names the classes .*'apple'.* holds another data set"):
        load_cifar10(folder, classes=CLASSES)
    assert len(load_cifar10(folder)[1][1]) == 1  # not checked without expected classes


def test_corrupt_binary_batches_give_clear_errors(tmp_path):
    tree = cifar_tree(n=2)
    folder = binary_folder(tmp_path / "bin", tree)
    good = (folder / "test_batch.bin").read_bytes()
    (folder / "test_batch.bin").write_bytes(good[:-1])
    with pytest.raises(ValueError, match="test_batch.bin holds 6145 bytes, not a whole number of 3073-byte"):
        load_cifar10(folder)
    (folder / "test_batch.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="holds 0 bytes"):
        load_cifar10(folder)
    raw, _ = tree["test_batch"]
    (folder / "test_batch.bin").write_bytes(cifar_records(raw, [4, 10]))
    with pytest.raises(ValueError, match=r"test_batch.bin: record 1 has label 10, outside 0\.\.9"):
        load_cifar10(folder)
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3.bin is missing"):
        load_cifar10(folder)


def test_legacy_python_folder_on_disk_is_read_without_network(tmp_path):
    tree = cifar_tree(n=2)
    root = tmp_path / "root"
    (root / "cifar10").mkdir(parents=True)
    with tarfile.open(cifar_archive(tmp_path / "cifar-10-python.tar.gz", tree)) as tar:
        tar.extractall(root / "cifar10", filter="data")
    folder = locate("cifar10", root, base_url=dead_url())  # a dead mirror: found on disk, not fetched
    assert folder == root / "cifar10" / "cifar-10-batches-py"
    (train_x, train_y), (test_x, test_y) = load_cifar10(folder, classes=CLASSES)
    assert bytes(test_x.flatten().tolist()) == tree["test_batch"][0]
    assert test_y.tolist() == tree["test_batch"][1]
    assert bytes(train_x.flatten().tolist()) == b"".join(tree[f"data_batch_{i}"][0] for i in range(1, 6))

    # Both versions on disk: the binary one wins.
    binary_folder(root / "cifar10" / "cifar-10-batches-bin", cifar_tree(n=1))
    assert locate("cifar10", root, download=False) == root / "cifar10" / "cifar-10-batches-bin"


def test_concurrent_locates_download_once(tmp_path, monkeypatch):
    """Two callers at once (as two torchrun ranks would be): one downloads, the other waits on the
    data-root lock and then finds the unpacked folder."""
    rnd = random.Random(0)
    tree = {name: (rnd.randbytes(len(raw)), labels) for name, (raw, labels) in cifar_tree(n=20).items()}
    served = tmp_path / "served"
    served.mkdir()
    archive = cifar_binary_archive(served / "cifar-10-binary.tar.gz", tree)  # ~370 kB, incompressible
    pin(monkeypatch, "cifar10", served)
    start, found, errors = threading.Barrier(2), [], []

    def fetch():
        start.wait()
        try:
            found.append(locate("cifar10", tmp_path / "root", base_url=srv.url))
        except Exception as e:  # reported below, with the other thread's result
            errors.append(e)

    with RangeServer({"cifar-10-binary.tar.gz": archive.read_bytes()}) as srv:
        srv.throttle = 0.05  # ~0.3 s for the whole file: the second caller arrives mid-download
        threads = [threading.Thread(target=fetch) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert not errors
    assert found == [tmp_path / "root" / "cifar10" / "cifar-10-batches-bin"] * 2
    assert len(srv.requests) == 1
