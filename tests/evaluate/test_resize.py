"""Resize tuning: sizes, halves, chosen on half A and confirmed on half B, stored and used by eval."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from conftest import make_image_folder, single_thread, tiny_recipe
from sotakit.data import TensorSource
from sotakit.evaluate import default_sizes, parse_sizes, resize
from sotakit.evaluate.resize import split_halves, tune_resize
from sotakit.recipes import load_recipe
from sotakit.train import fit
from sotakit.train.evaluate_run import evaluate_checkpoint, tune_run_resize


def test_sizes():
    assert parse_sizes("224:256:8") == [224, 232, 240, 248, 256]
    assert default_sizes(224) == [224, 232, 240, 248, 256]
    assert default_sizes(28) == [28, 29, 30, 31, 32]  # the same relative range: x 28/224
    with pytest.raises(ValueError, match="expected A:B:STEP"):
        parse_sizes("224-256")


def test_halves_are_disjoint_covering_stratified_and_seeded():
    targets = torch.tensor([0] * 11 + [1] * 6 + [2] * 3)
    a, b = split_halves(targets, seed=3)
    assert sorted(a + b) == list(range(20)) and not set(a) & set(b) and len(a) == 10
    for c, _ in Counter(targets.tolist()).items():
        assert abs(Counter(targets[a].tolist())[c] - Counter(targets[b].tolist())[c]) <= 1
    assert split_halves(targets, seed=3) == (a, b) and split_halves(targets, seed=4) != (a, b)


def test_chosen_on_half_a_reported_on_half_b(monkeypatch):
    source = TensorSource(torch.zeros(40, 1, 8, 8, dtype=torch.uint8), torch.arange(40) % 4)
    indices = list(range(0, 40, 2)) + [1, 3]  # a subset, as a test_limit gives
    halves = {}

    def fake_evaluate(model, loader, device):  # accuracy depends on the size and the half evaluated
        size = loader.dataset.transform.transforms[1].size[0]
        half = "A" if not halves or halves.get("A") == loader.dataset.indices else "B"
        halves.setdefault(half, loader.dataset.indices)
        return {"acc1": {"A": {8: 50.0, 10: 70.0, 12: 60.0}, "B": {8: 55.0, 10: 52.0, 12: 80.0}}[half][size]}
    monkeypatch.setattr(resize, "evaluate", fake_evaluate)
    res = tune_resize(torch.nn.Identity(), source, indices, sizes=[8, 10, 12], crop_size=8, current=8,
                      mean=(0.5,) * 3, std=(0.5,) * 3, say=lambda *a: None)
    assert res.chosen == 10  # best on A, although B would have preferred 12
    assert (res.acc_a, res.acc_b) == ([50.0, 70.0, 60.0], [55.0, 52.0, 80.0])
    assert sorted(halves["A"] + halves["B"]) == sorted(indices) and not set(halves["A"]) & set(halves["B"])
    assert (res.n_a, res.n_b) == (11, 11)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("resize")
    data = make_image_folder(root / "imgs", per_class=(12, 8))
    with single_thread():  # restored afterwards (it was left at one thread for the rest of the session)
        return fit(tiny_recipe(data, root), verbose=False).run_dir


@pytest.mark.slow
def test_tuned_size_is_stored_and_used_by_eval(tiny_run):
    before = load_recipe(tiny_run / "recipe.toml")
    res, split = tune_run_resize(tiny_run, sizes=[32, 40, 48, 64], seed=0, say=lambda *a: None)
    # 32 px images: the preset's 256/224 resize ratio gives 37, which is always evaluated too
    assert split == "test" and res.n_a + res.n_b == 24 and res.current == before.val_resize_size == 37
    assert res.sizes == [32, 37, 40, 48, 64]
    # the best on half A; among equals the size nearest the current one
    assert res.chosen == max(res.sizes, key=lambda s: (res.acc_a[res.sizes.index(s)], -abs(s - 37)))
    # kept only when half B agrees it is at least as good as the current size
    b = dict(zip(res.sizes, res.acc_b))
    assert res.confirmed == (b[res.chosen] >= b[37]) and res.stored == (res.chosen if res.confirmed else 37)
    after = load_recipe(tiny_run / "recipe.toml")
    assert after.val_resize_size == res.stored and after.replace(val_resize_size=37) == before
    stored = json.loads((tiny_run / "tune_resize.json").read_text())
    assert (stored["chosen"], stored["acc_b"], stored["split"]) == (res.chosen, res.acc_b, "test")
    out = evaluate_checkpoint(tiny_run)
    assert out["val_resize_size"] == res.stored
    direct = evaluate_checkpoint(tiny_run / "checkpoint-last.pt", val_resize_size=res.stored)
    assert out["test"] == direct["test"]
