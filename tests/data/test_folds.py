"""K-fold splits: exact, seeded, stratified, disjoint and covering; the loaders validate on the fold."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from conftest import tensor_bundle
from sotakit.data import make_loaders, stratified_folds
from sotakit.recipes import RecipeError, make_recipe

# Unbalanced classes: 10, 7, 3 and 1 images.
TARGETS = torch.tensor([0] * 10 + [1] * 7 + [2] * 3 + [3] * 1)[
    torch.randperm(21, generator=torch.Generator().manual_seed(5))]


@pytest.mark.parametrize("k", [2, 3, 5])
def test_folds_are_disjoint_covering_and_exactly_stratified(k):
    folds = stratified_folds(TARGETS, k, seed=0)
    flat = [i for f in folds for i in f]
    assert len(folds) == k and sorted(flat) == list(range(21)) and len(set(flat)) == 21
    for c, total in Counter(TARGETS.tolist()).items():
        counts = sorted(Counter(TARGETS[f].tolist())[c] for f in folds)
        q, r = divmod(total, k)  # exactly r folds hold one more image of class c than the others
        assert counts == [q] * (k - r) + [q + 1] * r
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1


def test_folds_are_seeded():
    assert stratified_folds(TARGETS, 3, seed=1) == stratified_folds(TARGETS, 3, seed=1)
    assert stratified_folds(TARGETS, 3, seed=1) != stratified_folds(TARGETS, 3, seed=2)
    with pytest.raises(ValueError, match="2 <= K <= 21"):
        stratified_folds(TARGETS, 1, seed=0)


def test_loaders_validate_on_the_fold_and_train_on_the_rest():
    images = torch.zeros(30, 1, 8, 8, dtype=torch.uint8)
    targets = torch.arange(30) % 3
    bundle = tensor_bundle(classes=3, images=images, targets=targets, test=6, name="t")
    folds = stratified_folds(targets, 3, seed=0)
    for seed in (0, 7):  # the folds do not move with the training seed
        for k in range(3):
            ld = make_loaders(bundle, batch_size=4, train_crop_size=8, val_resize_size=8, val_crop_size=8,
                              kfold=3, fold=k, seed=seed)
            assert ld.holdout.dataset.indices == folds[k]
            assert sorted(ld.train.dataset.indices) == sorted(set(range(30)) - set(folds[k]))
            assert len(ld.test.dataset) == 6  # the test split is untouched


@pytest.mark.parametrize("kw, msg", [
    (dict(kfold=1), "kfold must be 0 \\(off\\) or at least 2"),
    (dict(kfold=3, fold=3), "fold must be in 0..2 with kfold 3"),
    (dict(kfold=3, holdout=0.1), "use --kfold K or --holdout F, not both"),
])
def test_recipe_rejects_bad_fold_settings(kw, msg):
    with pytest.raises(RecipeError, match=msg):
        make_recipe(**kw)
