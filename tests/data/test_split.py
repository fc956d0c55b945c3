"""split_indices: the train / holdout / test positions of a run, a pure function of targets and settings."""

from __future__ import annotations

from collections import Counter

import torch

from sotakit.data import split_indices

TRAIN = torch.arange(100) % 4  # 25 images per class
TEST = torch.arange(40) % 4


def test_no_split_keeps_everything():
    train, hold, test = split_indices(TRAIN, TEST)
    assert train == list(range(100)) and hold == [] and test == list(range(40))


def test_holdout_is_exact_stratified_and_disjoint():
    train, hold, _ = split_indices(TRAIN, TEST, holdout=0.2, seed=3)
    assert len(hold) == 20 and set(train) | set(hold) == set(range(100)) and not set(train) & set(hold)
    assert Counter(TRAIN[hold].tolist()) == {0: 5, 1: 5, 2: 5, 3: 5}
    assert split_indices(TRAIN, TEST, holdout=0.2, seed=3)[1] == hold
    assert split_indices(TRAIN, TEST, holdout=0.2, seed=4)[1] != hold


def test_limits_take_stratified_subsets_of_the_pool():
    train, hold, test = split_indices(TRAIN, TEST, train_limit=40, test_limit=20, holdout=0.25, seed=1)
    assert len(train) + len(hold) == 40 and len(hold) == 10 and len(test) == 20
    assert Counter(TRAIN[train + hold].tolist()) == {0: 10, 1: 10, 2: 10, 3: 10}
    assert Counter(TEST[test].tolist()) == {0: 5, 1: 5, 2: 5, 3: 5}


def test_kfold_folds_cover_the_pool_once_whatever_the_seed():
    holds = [split_indices(TRAIN, TEST, kfold=5, fold=f, seed=f * 7)[1] for f in range(5)]
    assert sorted(i for h in holds for i in h) == list(range(100))
    assert all(len(h) == 20 for h in holds)
    train, hold, _ = split_indices(TRAIN, TEST, kfold=5, fold=2, seed=0)
    assert hold == holds[2] and sorted(train + hold) == list(range(100))
