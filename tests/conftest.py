"""Shared fixtures: tiny generated data sets and the real Fashion-MNIST when installed."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

FMNIST = Path("/usr/share/datasets/fashion-mnist")
# Runs keep the recipe's precision and memory format (float32, NCHW) unless a test asks: the machine probe
# (sotakit/train/machine.py) would switch on bf16 and channels-last on a CPU with native bf16. Set for the
# whole session (session fixtures train too) and inherited by the CLI's child processes;
# tests/train/test_machine.py unsets it to test the probe.
os.environ["SOTAKIT_PROBE"] = "off"

# `make test` runs two pytest workers (pytest-xdist -n 2) on a 2-core machine: one intra-op thread
# each, in the worker and in what it starts, since a second thread per worker spin-waits in OpenMP
# for a core the other worker holds (steps about 10x slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def make_image_folder(root: Path, classes=("cat", "dog", "fox"), per_class=(12, 4), size=32, seed=0) -> Path:
    """train/ and val/ folders of small images whose class is visible in their colour."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val"), per_class):
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.zeros((size, size, 3), np.uint8)
                base[..., ci % 3] = 180
                img = np.clip(base + rng.integers(0, 60, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    return root


def corrupt_in_place(path: Path) -> None:
    """Garble a file's pixels but keep its size and mtime, so the scan's cached index still trusts it."""
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[20:] = bytes(len(data) - 20)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def folder_factory():
    return make_image_folder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "imgs")


@pytest.fixture
def fmnist_root() -> Path:
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return FMNIST


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Folder-index caches and downloads go to a per-session temp dir, never the user's home.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _weights_schema(request):
    """The schema test over every weights file a test writes in its tmp_path (torchvision's
    test_schema_meta_validation): keys, num_params, _ops, _file_size and the tensors' hash. Files a test
    damages on purpose are named *.tampered.safetensors."""
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp is None or not tmp.is_dir():
        return
    from sotakit.evaluate.weights import schema_problems
    bad = {str(p): problems for p in tmp.rglob("*.safetensors")
           if not p.name.endswith(".tampered.safetensors") and (problems := schema_problems(p))}
    assert not bad, f"weights files that fail the meta schema: {bad}"


@contextmanager
def single_thread():
    """One intra-op thread for tests that run small models: a second thread on a busy 2-core machine
    spin-waits (a helper measured 7 s instead of 0.06 s for an efficientnet_v2_s pass)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture
def one_thread():
    with single_thread():
        yield


def tiny_recipe(data, output_dir, **changes):
    """A recipe that trains resnet9_w16 for one epoch on a tiny folder in a second or two."""
    from sotakit.recipes import make_recipe
    base = dict(data=str(data), model="resnet9_w16", epochs=1, batch_size=8, lr=0.05, workers=0,
                output_dir=str(output_dir), print_freq=2, device="cpu", seed=1)
    return make_recipe(**{**base, **changes})


@pytest.fixture(scope="session")
def colour_run(tmp_path_factory) -> Path:
    """A finished run (EMA and a 25% holdout) on the colour-coded folder: cat red, dog green, fox blue.
    Shared by the weights, prediction and calibration tests (about 2 s once per session); read it,
    never write into it (copy it first)."""
    from sotakit import fit
    base = tmp_path_factory.mktemp("colour_run")
    root = make_image_folder(base / "imgs", per_class=(16, 4))
    with single_thread():
        result = fit(tiny_recipe(root, base / "out", model_ema=True, model_ema_steps=1, holdout=0.25,
                                 epochs=2), verbose=False)
    return result.run_dir


def tensor_bundle(n=40, classes=4, size=12, *, images=None, targets=None, test=10, name="toy"):
    """A DataBundle in memory: ``n`` seeded random 1-channel ``size`` px uint8 images labelled
    ``i % classes`` (classes named a, b, ...), the first ``test`` of them also the test split.
    ``images`` and ``targets`` replace the generated ones (and then set ``n`` and ``size``)."""
    from sotakit.data import DataBundle, TensorSource
    if images is None:
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 255, (n, 1, size, size), dtype=torch.uint8, generator=g)
    if targets is None:
        targets = torch.arange(len(images)) % classes
    names = [chr(ord("a") + c) for c in range(classes)]
    return DataBundle(name, names, images.shape[-1], (0.5,) * 3, (0.5,) * 3, TensorSource(images, targets),
                      TensorSource(images[:test], targets[:test]))


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
