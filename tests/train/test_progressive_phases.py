"""fastbook ch. 7's two-phase progressive resizing next to the linear ramp, and its share under a budget."""

from __future__ import annotations

import pytest

from sotakit.experiments.ablation import budget
from sotakit.recipes import RecipeError, make_recipe
from sotakit.train import train_crop_at


def test_two_phases_train_small_then_at_full_size():
    r = make_recipe(epochs=9, train_crop_size=224, progressive_resize=128, progressive_resize_epochs=4)
    assert [train_crop_at(r, e) for e in range(9)] == [128] * 4 + [224] * 5
    ramp = r.replace(progressive_resize_epochs=0)  # today's linear ramp is unchanged
    assert [train_crop_at(ramp, e) for e in (0, 3, 6, 8)] == [128, 176, 224, 224]


def test_phases_need_a_small_size_and_a_full_size_epoch():
    with pytest.raises(RecipeError, match="needs --progressive-resize SIZE and fewer epochs than --epochs"):
        make_recipe(epochs=4, progressive_resize_epochs=2)
    with pytest.raises(RecipeError, match="fewer epochs than --epochs \\(4\\)"):
        make_recipe(epochs=4, progressive_resize=128, progressive_resize_epochs=4)


def test_budget_keeps_the_small_phase_s_share():
    r = make_recipe(epochs=30, progressive_resize=128, progressive_resize_epochs=15)
    assert budget(r, epochs=6, long=False).progressive_resize_epochs == 3
    assert budget(r, epochs=2, long=False).progressive_resize_epochs == 1
    assert budget(r, epochs=1, long=False).progressive_resize_epochs == 0  # one epoch: the ramp's start size
