"""locate() finds, downloads, verifies and unpacks data sets in their real layouts; CIFAR loads safely.

CIFAR-10 comes from its binary version (records of a label byte and 3,072 pixel bytes); a folder of
the python version's pickled batches already on disk is still read, without running any code.

Tiny archives in the real layouts are served from a loopback server; the catalog entries are swapped
for copies carrying these archives' checksums, so the real names, folders and layouts are exercised.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import pytest
import torch

from sotakit.data import catalog
from sotakit.data.catalog import DataNotFoundError, RemoteFile, locate
from sotakit.data.cifar import load_cifar10, load_pickle
from sotakit.data.download import sha256_of

try:  # tests/data as a package, or plain rootdir-relative modules
    from .test_download import RangeServer, dead_url
except ImportError:
    from test_download import RangeServer, dead_url

FASHION = tuple(f.filename for f in catalog.SPECS["fashion-mnist"].files)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real cache, system folder, environment or mirror leaks into (or out of) a test."""
    monkeypatch.delenv(catalog.DATA_ENV, raising=False)
    monkeypatch.delenv(catalog.MIRROR_ENV, raising=False)
    monkeypatch.setattr(catalog, "DEFAULT_CACHE", tmp_path / "cache")
    monkeypatch.setattr(catalog, "SYSTEM_DIRS",
                        {"fashion-mnist": (tmp_path / "system", "dataset-fashion-mnist")})


def pin(monkeypatch, name: str, folder: Path) -> None:
    """Point the catalog entry ``name`` at the checksums of the tiny files in ``folder``."""
    spec = catalog.SPECS[name]
    files = tuple(RemoteFile(f.filename, f.url, sha256_of(folder / f.filename)) for f in spec.files)
    monkeypatch.setitem(catalog.SPECS, name, dataclasses.replace(spec, files=files))


# --- tiny data sets in the real layouts ----------------------------------------------------------

def idx_files(folder: Path, n: int = 3) -> Path:
    """Fashion-MNIST's four gzip IDX files with ``n`` train and ``n`` test images."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        images = struct.pack(">IIII", 0x803, n, 28, 28) + bytes(i % 256 for i in range(n * 784))
        labels = struct.pack(">II", 0x801, n) + bytes(range(n))
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    return folder


def _py2_str(b: bytes) -> bytes:
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b


def _py2_int(i: int) -> bytes:
    return b"K" + bytes([i]) if 0 <= i < 256 else b"J" + struct.pack("<i", i)


def cifar_batch_pickle(images: bytes, labels: list[int],
                       batch_label: bytes = b"training batch 1 of 5") -> bytes:
    """A batch exactly as CIFAR ships it: Python 2 cPickle protocol 2 of a dict holding a numpy
    uint8 array (N, 3072), written opcode by opcode so the test needs neither Python 2 nor numpy."""
    n = len(labels)
    array = (b"cnumpy.core.multiarray\n_reconstruct\n" b"cnumpy\nndarray\n" + _py2_int(0) + b"\x85"
             + _py2_str(b"b") + b"\x87R"
             + b"(" + _py2_int(1) + _py2_int(n) + _py2_int(3072) + b"\x86"
             + b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"\x89\x88\x87R"
             + b"(" + _py2_int(3) + _py2_str(b"|") + b"NNN" + _py2_int(-1) + _py2_int(-1) + _py2_int(0)
             + b"tb"
             + b"\x89" + _py2_str(images) + b"tb")
    label_list = b"](" + b"".join(_py2_int(y) for y in labels) + b"e"
    names = b"](" + b"".join(_py2_str(f"img_{i}.png".encode()) for i in range(n)) + b"e"
    return (b"\x80\x02}(" + _py2_str(b"data") + array + _py2_str(b"labels") + label_list
            + _py2_str(b"batch_label") + _py2_str(batch_label) + _py2_str(b"filenames") + names + b"u.")


def cifar_tree(n: int = 2) -> dict[str, tuple[bytes, list[int]]]:
    """Per batch file: (raw pixel bytes, labels), distinct in every batch."""
    tree = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        raw = bytes((k * 31 + i * 7) % 256 for i in range(n * 3072))
        tree[name] = (raw, [(k + i) % 10 for i in range(n)])
    return tree


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def cifar_records(raw: bytes, labels: list[int]) -> bytes:
    """A binary-version batch: per image its label byte, then its 3,072 pixel bytes."""
    return b"".join(bytes([y]) + raw[i * 3072:(i + 1) * 3072] for i, y in enumerate(labels))


def cifar_binary_archive(path: Path, tree: dict[str, tuple[bytes, list[int]]],
                         meta: str | None = None) -> Path:
    """``cifar-10-binary.tar.gz`` as the Toronto page ships it (batches.meta.txt ends in blank lines)."""
    if meta is None:
        meta = "\n".join(catalog.SPECS["cifar10"].classes) + "\n\n"
    with tarfile.open(path, "w:gz") as tar:
        for name, (raw, labels) in tree.items():
            add(tar, f"cifar-10-batches-bin/{name}.bin", cifar_records(raw, labels))
        add(tar, "cifar-10-batches-bin/batches.meta.txt", meta.encode())
        add(tar, "cifar-10-batches-bin/readme.html", b"<meta HTTP-EQUIV=\"REFRESH\">")
    return path


def cifar_archive(path: Path, tree: dict[str, tuple[bytes, list[int]]]) -> Path:
    """The python version (``cifar-10-python.tar.gz``), which sotakit no longer downloads."""
    with tarfile.open(path, "w:gz") as tar:
        for name, (raw, labels) in tree.items():
            add(tar, f"cifar-10-batches-py/{name}", cifar_batch_pickle(raw, labels))
        meta = b"\x80\x02}(" + _py2_str(b"label_names") + b"](" + b"".join(
            _py2_str(c.encode()) for c in catalog.SPECS["cifar10"].classes) + b"eu."
        add(tar, "cifar-10-batches-py/batches.meta", meta)
    return path


def imagenette_archive(path: Path, top: str = "imagenette2-160") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "val"):
            for wnid in ("n01440764", "n02102040"):
                add(tar, f"{top}/{split}/{wnid}/x.JPEG", b"\xff\xd8 not really a jpeg")
    return path


# --- locate: download, verify, unpack, reuse -----------------------------------------------------

def test_locate_downloads_cifar_into_real_layout_once(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    tree = cifar_tree()
    cifar_binary_archive(served / "cifar-10-binary.tar.gz", tree)
    pin(monkeypatch, "cifar10", served)
    with RangeServer({"cifar-10-binary.tar.gz": (served / "cifar-10-binary.tar.gz").read_bytes()}) as srv:
        root = tmp_path / "root"
        folder = locate("cifar10", root, base_url=srv.url)
        assert folder == root / "cifar10" / "cifar-10-batches-bin"
        assert (folder / "batches.meta.txt").is_file()
        assert not list((root / "cifar10").glob(".extract-*"))
        assert locate("cifar10", root, base_url=srv.url) == folder
        assert len(srv.requests) == 1  # the second call found it on disk

    (train_x, train_y), (test_x, test_y) = load_cifar10(folder)
    assert train_x.dtype == torch.uint8 and train_x.shape == (10, 3, 32, 32)
    assert train_y.dtype == torch.int64
    expect_train = b"".join(tree[f"data_batch_{i}"][0] for i in range(1, 6))
    assert bytes(train_x.flatten().tolist()) == expect_train
    assert train_y.tolist() == sum((tree[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert bytes(test_x.flatten().tolist()) == tree["test_batch"][0]
    assert test_y.tolist() == tree["test_batch"][1]
    # Channel-first: the first 1024 bytes of an image row are its red plane.
    assert bytes(train_x[0, 0].flatten().tolist()) == tree["data_batch_1"][0][:1024]


def test_locate_downloads_imagenette_folder(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    imagenette_archive(served / "imagenette2-160.tgz")
    pin(monkeypatch, "imagenette-160", served)
    with RangeServer({"imagenette2-160.tgz": (served / "imagenette2-160.tgz").read_bytes()}) as srv:
        folder = locate("imagenette-160", tmp_path / "root", base_url=srv.url)
        assert folder == tmp_path / "root" / "imagenette-160" / "imagenette2-160"
        assert (folder / "train" / "n01440764" / "x.JPEG").is_file()
        assert (folder / "val" / "n02102040" / "x.JPEG").is_file()
        locate("imagenette-160", tmp_path / "root", base_url=srv.url)
        assert len(srv.requests) == 1


def test_locate_downloads_fashion_idx_files_into_cache(tmp_path, monkeypatch):
    served = idx_files(tmp_path / "served")
    pin(monkeypatch, "fashion-mnist", served)
    with RangeServer({f: (served / f).read_bytes() for f in FASHION}) as srv:
        folder = locate("fashion-mnist", base_url=srv.url)  # no data_root, no $SOTAKIT_DATA: cache
        assert folder == tmp_path / "cache" / "fashion-mnist"
        assert all((folder / f).read_bytes() == (served / f).read_bytes() for f in FASHION)
        assert locate("fashion-mnist", base_url=srv.url) == folder
        assert len(srv.requests) == 4


def test_mirror_environment_variable(tmp_path, monkeypatch):
    served = idx_files(tmp_path / "served")
    pin(monkeypatch, "fashion-mnist", served)
    monkeypatch.setenv(catalog.MIRROR_ENV, served.as_uri())  # file:// mirror
    assert locate("fashion-mnist", tmp_path / "root") == tmp_path / "root" / "fashion-mnist"


def test_checksum_mismatch_raises_and_leaves_no_file(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    imagenette_archive(served / "imagenette2-160.tgz")
    spec = catalog.SPECS["imagenette-160"]
    bad = (RemoteFile("imagenette2-160.tgz", spec.files[0].url, "ab" * 32),)
    monkeypatch.setitem(catalog.SPECS, "imagenette-160", dataclasses.replace(spec, files=bad))
    with RangeServer({"imagenette2-160.tgz": (served / "imagenette2-160.tgz").read_bytes()}) as srv:
        with pytest.raises(DataNotFoundError, match="checksum mismatch") as e:
            locate("imagenette-160", tmp_path / "root", base_url=srv.url)
    assert "ab" * 32 in str(e.value)
    target = tmp_path / "root" / "imagenette-160"
    assert not (target / "imagenette2-160.tgz").exists()
    assert not (target / "imagenette2-160.tgz.part").exists()
    assert not (target / "imagenette2-160").exists()


def test_resumes_interrupted_archive_download(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    archive = cifar_binary_archive(served / "cifar-10-binary.tar.gz", cifar_tree(n=20))
    pin(monkeypatch, "cifar10", served)
    data = archive.read_bytes()
    target = tmp_path / "root" / "cifar10"
    target.mkdir(parents=True)
    (target / "cifar-10-binary.tar.gz.part").write_bytes(data[: len(data) // 2])  # an earlier attempt
    with RangeServer({"cifar-10-binary.tar.gz": data}) as srv:
        locate("cifar10", tmp_path / "root", base_url=srv.url)
    [(_, rng, status, sent)] = srv.requests
    assert (rng, status) == (f"bytes={len(data) // 2}-", 206) and sent < len(data)


def test_archive_copied_by_hand_is_unpacked_offline(tmp_path, monkeypatch):
    target = tmp_path / "root" / "imagenette-160"
    target.mkdir(parents=True)
    imagenette_archive(target / "imagenette2-160.tgz")
    pin(monkeypatch, "imagenette-160", target)
    folder = locate("imagenette-160", tmp_path / "root", base_url=dead_url())
    assert (folder / "train").is_dir()


# --- search order and the offline message --------------------------------------------------------

def test_search_order(tmp_path, monkeypatch):
    arg, env, system = tmp_path / "arg", tmp_path / "env", tmp_path / "system"
    idx_files(arg / "fashion-mnist")  # found in the <root>/<name>/ subfolder
    idx_files(env)
    idx_files(system)
    monkeypatch.setenv(catalog.DATA_ENV, str(env))
    assert locate("fashion-mnist", arg, download=False) == arg / "fashion-mnist"
    assert locate("fashion-mnist", tmp_path / "empty", download=False) == env
    monkeypatch.delenv(catalog.DATA_ENV)
    assert locate("fashion-mnist", download=False) == system


def test_offline_message_lists_places_and_remedies(tmp_path, monkeypatch):
    monkeypatch.setenv(catalog.DATA_ENV, str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError) as e:
        locate("fashion-mnist", tmp_path / "arg", base_url=dead_url())
    msg = str(e.value)
    for place in ("arg", "env", "system", "cache"):
        assert str(tmp_path / place) in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "--data-root" in msg and "$SOTAKIT_DATA" in msg
    assert all(f in msg for f in FASHION)
    assert "could not download" in msg


def test_download_disabled_is_reported(tmp_path):
    with pytest.raises(DataNotFoundError, match="disabled") as e:
        locate("cifar10", tmp_path / "arg", download=False)
    assert "cifar-10-batches-py" in str(e.value)
    assert not (tmp_path / "arg").exists()  # nothing created when not downloading


def test_unknown_name_suggests_closest():
    with pytest.raises(ValueError, match="'cifar10'"):
        locate("cifar-10")
    with pytest.raises(ValueError, match="'fashion-mnist'"):
        locate("fashion_mnist")


# --- the catalog itself --------------------------------------------------------------------------

def test_specs_are_complete():
    assert set(catalog.SPECS) == {"fashion-mnist", "cifar10", "imagenette-160", "imagenette-320",
                                  "imagewoof-160", "imagewoof-320"}
    for spec in catalog.SPECS.values():
        assert len(spec.classes) == len(set(spec.classes)) == 10
        assert len(spec.mean) == len(spec.std) == 3 and all(0 < s < 1 for s in spec.mean + spec.std)
        for f in spec.files:
            assert f.sha256 or f.md5, f"{spec.name}: every file needs a published checksum"
            assert f.sha256 is None or len(f.sha256) == 64
            assert f.md5 is None or len(f.md5) == 32
            assert f.url.endswith("/" + f.filename)
    assert catalog.SPECS["imagenette-320"].classes[:2] == ("tench", "English springer")
    assert catalog.SPECS["imagewoof-160"].classes[0] == "Shih-Tzu"
    assert catalog.SPECS["imagewoof-320"].native_size == 320


def test_debian_fashion_mnist_files_match_catalog():
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not all((folder / f).is_file() for f in FASHION):
        pytest.skip("dataset-fashion-mnist is not installed")
    for f in catalog.SPECS["fashion-mnist"].files:
        assert sha256_of(folder / f.filename) in f.alt_sha256


# --- CIFAR pickles are read without running code -------------------------------------------------

class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "data_batch_1"
    evil.write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": []}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_pickle(evil)
    for name in ["data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        (tmp_path / name).write_bytes(cifar_batch_pickle(bytes(3072), [0]))
    with pytest.raises(ValueError, match="refusing"):
        load_cifar10(tmp_path)
    assert not marker.exists()


def test_corrupt_batches_give_clear_errors(tmp_path):
    tree = cifar_tree()
    for name, (raw, labels) in tree.items():
        (tmp_path / name).write_bytes(cifar_batch_pickle(raw, labels))
    good = (tmp_path / "test_batch").read_bytes()
    (tmp_path / "test_batch").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="test_batch is corrupt"):
        load_cifar10(tmp_path)
    (tmp_path / "test_batch").write_bytes(cifar_batch_pickle(bytes(3072 * 2), [1]))
    with pytest.raises(ValueError, match="claims 1 images but holds bytes for 2"):
        load_cifar10(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10(tmp_path)
