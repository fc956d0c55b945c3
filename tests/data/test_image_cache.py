"""The data cache: presized images equal to a decode of the files, same labels, hit, rebuilt when stale or
torn, never trusted half-built, decode errors counted, the size limit and the off switch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

import sotakit.data.datasets as datasets
import sotakit.data.image_cache as image_cache
from conftest import corrupt_in_place
from sotakit.data import (
    CachedFolderSource,
    DecodeErrorLimit,
    FolderSource,
    cached_bundle,
    data_fingerprint,
    load_image_folder,
    make_eval_transform,
)
from sotakit.data.image_cache import cache_root, presize_for
from sotakit.data.images import read_image

# (width, height) per file: non-square both ways; 41 x 33 resized to short side 16 gives an odd 19 x 16
SIZES = {"train/cat/0.png": (40, 32), "train/cat/1.png": (32, 48), "train/cat/2.png": (41, 33),
         "train/dog/0.png": (36, 36), "train/dog/1.png": (64, 40), "val/cat/0.png": (41, 33),
         "val/cat/1.png": (30, 44), "val/dog/0.png": (50, 36)}
SIZES_FOR = dict(train_crop_size=8, val_resize_size=16, val_crop_size=13, interpolation="bilinear")


def make_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for rel, (w, h) in SIZES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / rel)
    return root


def cache(bundle, tmp_path, **changes):
    kwargs = {**SIZES_FOR, "mode": "auto", "max_decode_errors": 0.0, **changes}
    return cached_bundle(bundle, fingerprint=data_fingerprint(bundle), root=tmp_path / "cache", **kwargs)


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "imgs")


def test_presize_rule():
    # twice the crop and at least the eval resize, capped by the native size
    assert presize_for(train_crop_size=32, val_resize_size=36, val_crop_size=32, native_size=72).train == 64
    assert presize_for(train_crop_size=32, val_resize_size=72, val_crop_size=64, native_size=96).train == 72
    assert presize_for(train_crop_size=32, val_resize_size=36, val_crop_size=32, native_size=50).train == 50
    assert presize_for(train_crop_size=28, val_resize_size=32, val_crop_size=28, native_size=28).train == 28
    imagenet = presize_for(train_crop_size=176, val_resize_size=232, val_crop_size=224, native_size=500)
    assert (imagenet.train, imagenet.test, imagenet.align) == (352, 232, 224)


def test_cached_images_are_the_decoded_files_presized_and_labels_match(folder, tmp_path):
    bundle = load_image_folder(folder)
    cached, note = cache(bundle, tmp_path)
    assert note.startswith("data cache: built (8 images decoded, 5 train at 16 px, 3 test at 16 px")
    assert isinstance(cached.train, CachedFolderSource) and isinstance(cached.test, CachedFolderSource)
    assert cached.train.images.shape == (5, 3, 16, 16) and cached.train.images.dtype == torch.uint8
    assert torch.equal(cached.train.targets, bundle.train.targets)
    assert torch.equal(cached.test.targets, bundle.test.targets)
    assert cached.classes == bundle.classes == ["cat", "dog"]
    assert data_fingerprint(cached) == data_fingerprint(bundle)  # resume checks see the same data
    for source, cached_source in ((bundle.train, cached.train), (bundle.test, cached.test)):
        for i, (path, _) in enumerate(source.samples):
            resized = F.resize(F.to_image(read_image(path)[0]), [16], antialias=True)
            h, w = resized.shape[-2:]
            # the square around the eval crop: centred, one pixel off where two rounded offsets differ
            top, left = (round((h - 13) / 2) - round(3 / 2), round((w - 13) / 2) - round(3 / 2))
            top, left = min(max(top, 0), h - 16), min(max(left, 0), w - 16)
            assert torch.equal(cached_source.images[i], resized[:, top:top + 16, left:left + 16]), path


def test_evaluating_a_cached_test_image_equals_evaluating_the_file(folder, tmp_path):
    bundle = load_image_folder(folder)
    cached, _ = cache(bundle, tmp_path)
    eval_tf = make_eval_transform(resize_size=16, crop_size=13)
    for i, (path, _) in enumerate(bundle.test.samples):
        assert torch.equal(eval_tf(cached.test.load(i)[0]), eval_tf(read_image(path)[0])), path


def test_a_second_load_hits_the_cache_without_decoding(folder, tmp_path, monkeypatch):
    first, _ = cache(load_image_folder(folder), tmp_path)

    def no_decoding(*args, **kwargs):
        raise AssertionError("read_image called on a cache hit")

    monkeypatch.setattr(datasets, "read_image", no_decoding)  # FolderSource.load's decoder
    bundle = load_image_folder(folder)  # the scan's own cache answers without decoding too
    second, note = cache(bundle, tmp_path)
    assert note.startswith("data cache: hit, 5 train images at 16 px and 3 test images at 16 px")
    assert torch.equal(second.train.images, first.train.images)
    assert torch.equal(second.test.images, first.test.images)


def test_a_changed_file_rebuilds_and_an_added_class_builds_anew(folder, tmp_path):
    cache(load_image_folder(folder), tmp_path)
    path = folder / "train" / "dog" / "0.png"
    os.utime(path, ns=(1, 1))  # same size (same fingerprint), another mtime: rewritten in place
    cached, note = cache(load_image_folder(folder), tmp_path)
    assert note.startswith("data cache: rebuilt (files changed since it was built; 8 images decoded")

    Image.fromarray(np.full((36, 36, 3), 7, np.uint8)).save(path)  # another size: another fingerprint
    bundle = load_image_folder(folder)
    cached, note = cache(bundle, tmp_path)
    assert note.startswith("data cache: built (8 images decoded")
    k = [p for p, _ in bundle.train.samples].index(str(path))
    assert torch.equal(cached.train.images[k], torch.full((3, 16, 16), 7, dtype=torch.uint8))
    assert len(list((tmp_path / "cache").iterdir())) == 1  # the earlier contents' cache is gone

    make_folder_class = folder / "train" / "eel"
    make_folder_class.mkdir()
    (folder / "val" / "eel").mkdir()
    for split in ("train", "val"):
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / split / "eel" / "0.png")
    bundle = load_image_folder(folder)
    cached, note = cache(bundle, tmp_path)
    assert note.startswith("data cache: built (10 images decoded") and cached.classes == ["cat", "dog", "eel"]
    assert cached.train.targets.tolist() == bundle.train.targets.tolist() == [0, 0, 0, 1, 1, 2]


@pytest.mark.parametrize("damage", ["truncate", "overwrite", "manifest"])
def test_a_torn_cache_is_rebuilt_not_trusted(folder, tmp_path, damage):
    first, _ = cache(load_image_folder(folder), tmp_path)
    good = first.train.images.clone()
    (where,) = (tmp_path / "cache").iterdir()
    array = where / "train.npy"
    if damage == "truncate":  # a copy or a disk that stopped half-way
        os.truncate(array, array.stat().st_size - 100)
    elif damage == "overwrite":  # the last image's bytes replaced, size unchanged
        with open(array, "r+b") as f:
            f.seek(-16 * 16, os.SEEK_END)
            f.write(bytes(16 * 16))
    else:
        (where / "manifest.json").write_text('{"version": 1, "finger')
    del first
    cached, note = cache(load_image_folder(folder), tmp_path)
    why = {"truncate": "train.npy is torn or missing", "overwrite": "train.npy does not hold the images",
           "manifest": "no readable manifest"}[damage]
    assert note.startswith(f"data cache: rebuilt ({why}")
    assert torch.equal(cached.train.images, good)


def test_a_build_that_dies_half_way_leaves_nothing_trusted(folder, tmp_path, monkeypatch):
    calls = []
    real = image_cache.presize_image

    def dies(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # a Ctrl-C or a kill mid-build
        return real(*args, **kwargs)

    monkeypatch.setattr(image_cache, "presize_image", dies)
    bundle = load_image_folder(folder)
    with pytest.raises(KeyboardInterrupt):
        cache(bundle, tmp_path)
    assert list((tmp_path / "cache").iterdir()) == []  # neither the folder nor its temporary copy
    monkeypatch.setattr(image_cache, "presize_image", real)
    assert cache(bundle, tmp_path)[1].startswith("data cache: built")


def test_decode_errors_at_build_time_follow_max_decode_errors(folder, tmp_path):
    load_image_folder(folder)  # the scan, cached
    corrupt_in_place(folder / "train" / "cat" / "1.png")
    bundle = load_image_folder(folder)
    with pytest.raises(DecodeErrorLimit, match=r"1 of 5 images failed to decode during the run, more than "
                                               r"the threshold --max-decode-errors 0.1 \(0.5 images\)"):
        cache(bundle, tmp_path, max_decode_errors=0.1)
    cached, _ = cache(load_image_folder(folder), tmp_path, max_decode_errors=0.2)  # 1 allowed: the cache hit
    assert cached.train.decode_errors() == 1
    image, j = cached.train.load(1)  # replaced by the next readable image, as FolderSource does
    assert j == 2 and torch.equal(image, cached.train.images[2])


def test_off_too_big_and_in_memory_data(folder, tmp_path, monkeypatch):
    bundle = load_image_folder(folder)
    same, note = cache(bundle, tmp_path, mode="off")
    assert same is bundle and note.startswith("data cache: off (--data-cache off)")
    monkeypatch.setattr(image_cache, "FIT_FRACTION", 0.0)
    same, note = cache(bundle, tmp_path)
    assert same is bundle and isinstance(same.train, FolderSource)
    assert note.startswith("data cache: not built, 0.0 GB would exceed half the free disk")
    assert cache(bundle, tmp_path, mode="on")[1].startswith("data cache: built")  # on: whatever its size
    with pytest.raises(ValueError, match="data cache mode 'yes': use one of auto, on, off"):
        cache(bundle, tmp_path, mode="yes")


@pytest.mark.slow  # trains twice with fit()
def test_fit_uses_the_cache_by_default_and_evaluates_as_the_files_do(image_folder, tmp_path, one_thread,
                                                                    monkeypatch):
    import json
    import shutil

    from conftest import tiny_recipe
    from sotakit.train import fit
    from sotakit.train.evaluate_run import evaluate_checkpoint

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no cache of this folder yet
    run = fit(tiny_recipe(image_folder, tmp_path / "a", tta="2"), verbose=False).run_dir
    assert "data cache: built (48 images decoded, 36 train at 32 px, 12 test at 37 px" in \
        (run / "recipe.toml").read_text()
    # the final evaluation ran on the cached test split; `sotakit eval` reads that cache (TTA's augmented
    # views too), and the plain figure is the same from the files
    summary = json.loads((run / "summary.json").read_text())
    cached = evaluate_checkpoint(run)
    assert cached["test"] == summary["test"] and cached["test_tta"] == summary["test_tta"]
    shutil.rmtree(cache_root())
    assert evaluate_checkpoint(run)["test"]["acc1"] == summary["test"]["acc1"]
    assert not cache_root().exists()  # eval never builds a cache
    off = fit(tiny_recipe(image_folder, tmp_path / "b", data_cache="off"), verbose=False).run_dir
    assert "data cache: off (--data-cache off)" in (off / "recipe.toml").read_text()
