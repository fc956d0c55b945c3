"""Transforms, mixing, samplers and loaders compute what they should."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torchvision.transforms import v2

from conftest import tensor_bundle
from sotakit.data import BatchFinish, Collate, RASampler, load_image_folder, make_loaders, stratified_split
from sotakit.data.transforms import auto_augment_transform, make_eval_transform, make_train_transform


@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("alphas", [(0.2, 0.0), (0.0, 1.0), (0.2, 1.0)])
def test_mixing_keeps_label_mass_and_mixes_images(batch, alphas):
    torch.manual_seed(0)
    items = [(torch.full((1, 8, 8), 10 * i, dtype=torch.uint8), i % 4) for i in range(batch)]
    collate = Collate(BatchFinish((0.0,) * 3, (1.0,) * 3), num_classes=4, mixup_alpha=alphas[0],
                      cutmix_alpha=alphas[1])
    x, y = collate(items)
    assert x.shape == (batch, 3, 8, 8) and x.dtype == torch.float32
    assert y.shape == (batch, 4)
    torch.testing.assert_close(y.sum(dim=1), torch.ones(batch))
    if batch > 1:
        # The mixing weight of image i's own label equals the share of its own pixels (mixup: lambda;
        # cutmix: the kept area), so pixels and labels agree.
        own = torch.tensor([10 * i / 255 for i in range(batch)])
        lam = y[torch.arange(batch), torch.arange(batch) % 4]
        other = torch.roll(own, 1)
        mean_pix = x[:, 0].mean(dim=(1, 2))
        expect = torch.where(own == other, own, lam * own + (1 - lam) * other)
        torch.testing.assert_close(mean_pix, expect, atol=1e-5, rtol=1e-4)


def test_batch_finish_normalizes_and_makes_rgb():
    imgs = torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)
    out = BatchFinish((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(imgs)
    assert out.shape == (2, 3, 4, 4)
    torch.testing.assert_close(out, torch.full((2, 3, 4, 4), 2.0))


def test_random_erasing_only_in_some_images():
    torch.manual_seed(0)
    out = BatchFinish((0.0,) * 3, (1.0,) * 3, random_erase=0.5)(
        torch.full((200, 3, 16, 16), 255, dtype=torch.uint8))
    erased = (out != 1.0).flatten(1).any(dim=1).float().mean().item()
    assert 0.35 < erased < 0.65


@pytest.mark.parametrize("policy, cls", [("ta_wide", v2.TrivialAugmentWide), ("ra", v2.RandAugment),
                                         ("augmix", v2.AugMix), ("imagenet", v2.AutoAugment),
                                         ("cifar10", v2.AutoAugment), ("svhn", v2.AutoAugment)])
def test_auto_augment_policies(policy, cls):
    t = auto_augment_transform(policy, "bilinear", ra_magnitude=5, augmix_severity=2)
    assert isinstance(t, cls)
    if policy == "ra":
        assert t.magnitude == 5
    if policy == "augmix":
        assert t.severity == 2
    if cls is v2.AutoAugment:
        assert t.policy == v2.AutoAugmentPolicy(policy)
    out = make_train_transform(crop_size=12, auto_augment=policy)(
        torch.randint(0, 255, (3, 16, 16), dtype=torch.uint8))
    assert out.shape == (3, 12, 12) and out.dtype == torch.uint8


def test_eval_transform_sizes_and_interpolation():
    t = make_eval_transform(resize_size=32, crop_size=28, interpolation="bicubic")
    out = t(torch.zeros(1, 28, 56, dtype=torch.uint8))
    assert out.shape == (1, 28, 28)
    resize = t.transforms[1]
    assert resize.size == [32] and resize.interpolation == v2.InterpolationMode.BICUBIC


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_ra_sampler_repeats_each_index(replicas):
    n, reps = 48, 4
    per_rank = [list(RASampler(n, num_replicas=replicas, rank=r, seed=1, repetitions=reps))
                for r in range(replicas)]
    assert all(len(p) == n // replicas for p in per_rank)
    if replicas == 1:
        # each chosen image appears `reps` times in a row: one batch holds its augmented copies
        seq = per_rank[0]
        assert all(len(set(seq[i:i + reps])) == 1 for i in range(0, len(seq), reps))
        assert set(Counter(seq).values()) == {reps}
    else:
        # copies of one image go to different ranks
        first = [p[0] for p in per_rank]
        assert len(set(first)) == 1 if replicas <= reps else True
    s = RASampler(n, seed=1, repetitions=reps)
    s.set_epoch(1)
    assert list(s) != per_rank[0] if replicas == 1 else True


def test_stratified_holdout_is_disjoint_covering_and_proportional():
    targets = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    keep, hold = stratified_split(targets, 0.2, seed=3)
    assert sorted(keep + hold) == list(range(100)) and not set(keep) & set(hold)
    assert Counter(targets[hold].tolist()) == {0: 10, 1: 6, 2: 4}
    assert stratified_split(targets, 0.2, seed=3) == (keep, hold)
    assert stratified_split(targets, 0.2, seed=4)[1] != hold


def test_loaders_split_and_exact_sharded_eval():
    b = tensor_bundle()
    L = make_loaders(b, batch_size=4, train_crop_size=10, val_resize_size=12, val_crop_size=12, holdout=0.2)
    assert len(L.train.dataset) == 32 and len(L.holdout.dataset) == 8
    x, y = next(iter(L.train))
    assert x.shape == (4, 3, 10, 10)
    # two ranks see disjoint test images that together are the whole test split
    seen = []
    for rank in range(2):
        Lr = make_loaders(b, batch_size=4, train_crop_size=10, val_resize_size=12, val_crop_size=12,
                          world_size=2, rank=rank)
        seen += Lr.test.dataset.indices
    assert sorted(seen) == list(range(10))


def test_train_limit_is_stratified():
    b = tensor_bundle()
    L = make_loaders(b, batch_size=4, train_crop_size=10, val_resize_size=12, val_crop_size=12,
                     train_limit=20)
    assert Counter(L.train.dataset.targets.tolist()) == {0: 5, 1: 5, 2: 5, 3: 5}


def test_image_folder_classes_must_match(tmp_path, folder_factory):
    root = folder_factory(tmp_path / "d")
    (root / "val" / "dog").rename(root / "val" / "wolf")
    with pytest.raises(ValueError, match=r"only in train: \['dog'\]; only in val: \['wolf'\]"):
        load_image_folder(root)


def test_unreadable_files_are_skipped_and_listed(tmp_path, folder_factory):
    root = folder_factory(tmp_path / "d")
    good = (root / "train" / "cat" / "0.png").read_bytes()
    (root / "train" / "cat" / "trunc.png").write_bytes(good[: len(good) // 2])
    (root / "train" / "dog" / "empty.jpg").write_bytes(b"")
    b = load_image_folder(root)
    assert sorted(p.rsplit("/", 1)[1] for p, _ in b.skipped) == ["empty.jpg", "trunc.png"]
    assert len(b.train) == 36 and len(b.test) == 12 and b.native_size == 32
    img, j = b.train.load(0)
    assert img.mode == "RGB" and j == 0
    # a file that breaks after the scan is replaced by the next one, labelled as that one
    first = b.train.samples[0][0]
    open(first, "wb").close()
    img, j = b.train.load(0)
    assert j == 1 and img.mode == "RGB"


@pytest.mark.parametrize("batch_augment", [True, False])
def test_set_train_crop_size_changes_the_batches(batch_augment):
    from sotakit.data import set_train_crop_size
    L = make_loaders(tensor_bundle(), batch_size=4, train_crop_size=12, val_resize_size=12, val_crop_size=12,
                     batch_augment=batch_augment)
    assert next(iter(L.train))[0].shape[-1] == 12
    set_train_crop_size(L, 8)
    assert next(iter(L.train))[0].shape[-2:] == (8, 8)


def test_augmentation_is_a_function_of_the_sample_position_not_the_worker(tmp_path, folder_factory):
    """Per-sample seeds: the same batches with 0 or 2 workers, and an epoch resumed mid-way repeats
    exactly the batches it skipped to (TrivialAugment, erasing and MixUp all drawn from the seeds)."""
    from sotakit.data import load_image_folder
    bundle = load_image_folder(folder_factory(tmp_path / "d", per_class=(8, 2)))

    def batches(workers, skip=0):
        L = make_loaders(bundle, batch_size=4, train_crop_size=16, val_resize_size=16, val_crop_size=16,
                         auto_augment="ta_wide", random_erase=0.5, mixup_alpha=0.4, seed=3, workers=workers)
        L.train_sampler.set_epoch(1, skip=skip)
        L.train.generator.manual_seed(123)
        torch.manual_seed(999 + workers)  # the global stream must not matter
        return [b for b in L.train]

    zero, two, resumed = batches(0), batches(2), batches(0, skip=8)
    assert len(zero) == 6
    for (x0, y0), (x2, y2) in zip(zero, two):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    for (x0, y0), (xr, yr) in zip(zero[2:], resumed):
        assert torch.equal(x0, xr) and torch.equal(y0, yr)
    assert not torch.equal(zero[0][0], zero[1][0])
