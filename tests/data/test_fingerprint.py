"""data_fingerprint: stable for the same data (also moved elsewhere), changed by any file or label change."""

from __future__ import annotations

import shutil
from functools import partial

import numpy as np
import torch
from PIL import Image

from conftest import tensor_bundle
from sotakit.data import data_fingerprint, load_image_folder


def fp(path) -> str:
    return data_fingerprint(load_image_folder(path))


def test_folder_fingerprint_stable_and_sensitive(folder_factory, tmp_path):
    root = folder_factory(tmp_path / "a")
    first = fp(root)
    assert len(first) == 64 and fp(root) == first
    moved = shutil.copytree(root, tmp_path / "elsewhere" / "b")
    assert fp(moved) == first  # the path of the tree is not part of the data
    # a label change: a training image moved to another class
    shutil.move(moved / "train" / "cat" / "0.png", moved / "train" / "dog" / "moved.png")
    relabelled = fp(moved)
    assert relabelled != first
    # a file change: a test image rewritten with other content (and size)
    shutil.rmtree(moved)
    moved = shutil.copytree(root, tmp_path / "elsewhere" / "c")
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(moved / "val" / "fox" / "1.png")
    assert fp(moved) not in (first, relabelled)
    # a file added
    shutil.rmtree(moved)
    moved = shutil.copytree(root, tmp_path / "elsewhere" / "d")
    shutil.copy(moved / "train" / "dog" / "0.png", moved / "train" / "dog" / "extra.png")
    assert fp(moved) != first


def test_tensor_fingerprint_stable_and_sensitive():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8, generator=g)
    targets = torch.tensor([0, 1, 0, 1, 0, 1])
    bundle = partial(tensor_bundle, classes=2, test=2, name="t")  # 6 images of 8 px, the first 2 as test
    first = data_fingerprint(bundle(images=images, targets=targets))
    assert data_fingerprint(bundle(images=images.clone(), targets=targets.clone())) == first
    pixel = images.clone()
    pixel[3, 0, 4, 4] ^= 1
    assert data_fingerprint(bundle(images=pixel, targets=targets)) != first
    label = targets.clone()
    label[5] = 0
    assert data_fingerprint(bundle(images=images, targets=label)) != first
