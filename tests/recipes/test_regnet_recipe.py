"""The techniques of the Keras RegNet training (issue 12): area factor, mixup by size, PCA jitter flags,
the regnet-keras preset."""

from __future__ import annotations

import re

import pytest

from sotakit.models.regnet import PUBLISHED
from sotakit.recipes import RecipeError, load_preset, make_recipe, resolve
from sotakit.recipes.model_size import auto_mixup_alpha, regnet_size
from sotakit.train.recipe_kwargs import loader_kwargs, run_warnings


def test_auto_mixup_reproduces_the_seed_tables():
    """For each of the 24 the alpha the seed's result table lists (no mixup where it lists none)."""
    for name, (_, _, settings) in PUBLISHED.items():
        m = re.search(r"mixup=([\d.]+)", settings)
        assert auto_mixup_alpha(name) == (float(m.group(1)) if m else 0.0), name


def test_auto_mixup_reads_torchvision_names_and_refuses_other_models():
    assert regnet_size("regnet_y_1_6gf") == ("y", 1.6) and regnet_size("regnet_x_400mf") == ("x", 0.4)
    assert [auto_mixup_alpha(n) for n in ("regnet_x_800mf", "regnet_y_400mf", "regnet_x_8gf",
                                          "regnet_y_128gf")] == [0.0, 0.2, 0.3, 0.4]
    with pytest.raises(RecipeError, match="'resnet18' is not a RegNet; give a number"):
        make_recipe(model="resnet18", mixup_alpha="auto")


def test_auto_is_resolved_with_a_note():
    recipe = make_recipe(model="regnety_064", mixup_alpha="AUTO")
    assert recipe.mixup_alpha == "auto"
    resolved, notes = resolve(recipe, native_size=224)
    assert resolved.mixup_alpha == 0.3 and loader_kwargs(resolved)["mixup_alpha"] == 0.3
    assert "--mixup-alpha auto: 0.3 for regnety_064 (the Keras RegNets' alpha for this size)" in notes
    with pytest.raises(RecipeError, match="mixup_alpha must be a number"):
        make_recipe(mixup_alpha="often")


def test_area_factor_is_the_crop_min_scale_flag():
    from sotakit.cli import build_recipe, make_parser
    _, train = make_parser()
    args = train.parse_args(["--area-factor", "0.16", "--pca-jitter", "0.1", "--precise-bn", "4096"])
    args.recipe = args.config = None
    recipe = build_recipe(args)
    assert (recipe.crop_min_scale, recipe.pca_jitter, recipe.precise_bn) == (0.16, 0.1, 4096)
    assert loader_kwargs(recipe)["crop_min_scale"] == 0.16 and loader_kwargs(recipe)["pca_jitter"] == 0.1


def test_pca_jitter_on_one_channel_data_is_noted():
    r = make_recipe(pca_jitter=0.1)
    assert any("--pca-jitter 0.1 has no effect: the images have one channel" in w
               for w in run_warnings(r, 50, train_images=5000, channels=1))
    assert not any("pca" in w for w in run_warnings(r, 50, train_images=5000, channels=3))


def test_regnet_keras_preset_holds_the_seed_settings():
    r = load_preset("regnet-keras")
    assert (r.opt, r.weight_decay, r.epochs, r.lr_warmup_epochs, r.lr_scheduler) == (
        "adamw", 5e-5, 100, 5, "cosineannealinglr")
    assert (r.crop_min_scale, r.pca_jitter, r.mixup_alpha, r.label_smoothing) == (0.08, 0.1, "auto", 0.0)
    assert r.lr * 128 / r.lr_ref_batch == pytest.approx(0.001)  # 0.001 per TPU core of 128 images


def test_area_factor_bounds_the_crop_area():
    """The inception crop's area ~ U(area_factor, 1) x H x W: boxes of a 0.25 factor never go below it
    (up to the rounding of the side lengths) and some reach near it."""
    import torch

    from sotakit.data.batch_augment import sample_crop_boxes
    boxes = sample_crop_boxes(4000, 64, 64, scale=(make_recipe(crop_min_scale=0.25).crop_min_scale, 1.0),
                              generator=torch.Generator().manual_seed(0))
    frac = boxes[:, 2] * boxes[:, 3] / (64 * 64)
    assert frac.min() >= 0.25 * (1 - 2 / 16) and frac.min() < 0.27 and frac.max() <= 1.0
