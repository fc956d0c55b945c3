"""The batch crop/flip path is a property of the per-image transform; every augmentation shows in a batch."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from conftest import tensor_bundle
from sotakit.data import batch_crop_for, make_loaders, make_train_transform, set_data_epoch
from sotakit.recipes import Recipe
from sotakit.train.recipe_kwargs import LOADER_ARGS, loader_kwargs

BASE = Recipe(batch_size=8, train_crop_size=12, val_resize_size=12, val_crop_size=12, workers=0, seed=0)
# An augmentation field and a value that must change the first training batch.
AUGMENTATIONS = {"auto_augment": "ta_wide", "random_erase": 0.5, "mixup_alpha": 0.4, "cutmix_alpha": 1.0,
                 "color_jitter": 0.4, "crop_min_scale": 0.5, "interpolation": "bicubic", "pca_jitter": 0.1}
# Loader fields that are not augmentations of the first batch (sizes, splits, machinery), or only
# parameters of one (the policies' magnitude and severity, the RA sampler's repetitions).
NOT_AUGMENTATIONS = {"batch_size", "train_crop_size", "val_resize_size", "val_crop_size", "holdout", "seed",
                     "workers", "train_limit", "test_limit", "kfold", "fold", "max_decode_errors",
                     "loader_timeout", "ra_magnitude", "augmix_severity", "ra_sampler", "ra_reps",
                     "pca_stats", "batch_augment"}


def rgb_bundle():
    """Colour images (saturation jitter needs three channels)."""
    g = torch.Generator().manual_seed(0)
    return tensor_bundle(images=torch.randint(0, 255, (40, 3, 12, 12), dtype=torch.uint8, generator=g))


def first_batch(recipe: Recipe, **changes):
    loaders = make_loaders(rgb_bundle(), **{**loader_kwargs(recipe), **changes})
    set_data_epoch(loaders, epoch=0, seed=recipe.seed)
    torch.manual_seed(0)
    return loaders, next(iter(loaders.train))


def test_every_loader_field_is_classified():
    fields = set(LOADER_ARGS.values())
    assert fields - set(AUGMENTATIONS) - NOT_AUGMENTATIONS == set(), (
        "a new loader field: add it to one of the tables")


@pytest.mark.parametrize("field", sorted(AUGMENTATIONS))
def test_each_augmentation_changes_the_first_batch_on_in_memory_data(field):
    """Against the batch without it on both paths: an augmentation that only switched the batch path
    off (and was then dropped) would equal the per-image batch."""
    _, (x1, y1) = first_batch(BASE.replace(**{field: AUGMENTATIONS[field]}))
    for path in (True, False):
        _, (x0, y0) = first_batch(BASE, batch_augment=path)
        assert x0.shape == x1.shape
        assert not (torch.equal(x0, x1) and torch.equal(y0, y1)), \
            f"--{field} left the first batch unchanged (batch path {path})"


def test_batch_path_only_for_exactly_crop_flip_and_a_batched_policy():
    plain, _ = first_batch(BASE)
    assert plain.train.collate_fn.finish.crop is not None  # crop + flip: whole batches at once
    assert plain.train.collate_fn.finish.crop.augment is None
    for policy in ("ta_wide", "ra"):  # crop + flip + a batched policy: whole batches too
        crop = first_batch(BASE.replace(auto_augment=policy))[0].train.collate_fn.finish.crop
        assert crop is not None and crop.augment.policy == policy
        assert crop.augment.interpolation == "bilinear"  # the recipe's interpolation, as the per-image path
    assert first_batch(BASE.replace(auto_augment="ta_wide", batch_augment=False))[0] \
        .train.collate_fn.finish.crop is None  # --no-batch-augment: the per-image path
    for field, value in (("auto_augment", "augmix"), ("auto_augment", "imagenet"),
                         ("color_jitter", 0.4), ("interpolation", "bicubic")):
        loaders, _ = first_batch(BASE.replace(**{field: value}))
        assert loaders.train.collate_fn.finish.crop is None, field  # a per-image step: per-image path
    tf = make_train_transform(crop_size=12)
    assert batch_crop_for(tf, in_memory=False) is None  # image folders decode per image anyway
    crop = batch_crop_for(make_train_transform(crop_size=12, hflip_prob=0.0, crop_min_scale=0.3),
                          in_memory=True)
    assert (crop.size, crop.scale, crop.hflip_prob) == (12, (0.3, 1.0), 0.0)
    extra = v2.Compose([*tf.transforms[:-1], v2.RandomVerticalFlip(), tf.transforms[-1]])
    assert batch_crop_for(extra, in_memory=True) is None  # a step added later turns the batch path off


def test_color_jitter_on_a_tiny_tensor():
    """Brightness, contrast and saturation factors in [1-f, 1+f]: a flat grey image stays flat (contrast
    and saturation keep it) with its level scaled by the brightness factor; a fixed seed repeats."""
    tf = make_train_transform(crop_size=4, hflip_prob=0.0, color_jitter=0.4)
    grey = torch.full((1, 6, 6), 100, dtype=torch.uint8)
    levels = []
    for seed in range(20):
        torch.manual_seed(seed)
        out = tf(grey)
        assert out.shape == (1, 4, 4) and out.dtype == torch.uint8
        assert torch.all(out == out[0, 0, 0])
        levels.append(int(out[0, 0, 0]))
    assert all(60 <= v <= 140 for v in levels) and len(set(levels)) > 10
    torch.manual_seed(3)
    again = int(tf(grey)[0, 0, 0])
    assert again == levels[3]
    # saturation: a coloured image's channels move apart or together; f=0 leaves the image as it was
    red = torch.zeros((3, 4, 4), dtype=torch.uint8)
    red[0] = 200
    red[1:] = 50
    torch.manual_seed(0)
    assert not torch.equal(tf(red), red)
    torch.manual_seed(0)
    assert torch.equal(make_train_transform(crop_size=4, hflip_prob=0.0, crop_min_scale=1.0)(red), red)


def test_the_batch_path_on_a_cpu_keeps_its_augmentation_in_the_main_process():
    """A worker process beside the training threads cost 30% of a step on 2 cores once augmentation is
    batched (benchmarks/ceiling.py): fit passes batch_path_workers=0 on a CPU; the per-image path keeps
    its workers, and so does a GPU."""
    from sotakit.train.fit import cpu_batch_workers
    bundle = tensor_bundle(n=40, size=12)
    kw = {**loader_kwargs(Recipe(train_crop_size=12, val_resize_size=12, val_crop_size=12, batch_size=8)),
          "workers": 1}
    cpu = cpu_batch_workers(torch.device("cpu"))
    assert cpu == 0 and cpu_batch_workers(torch.device("cuda")) is None
    batched = make_loaders(bundle, **kw, batch_path_workers=cpu)
    assert batched.train.num_workers == 0 and batched.test.num_workers == 0
    per_image = make_loaders(bundle, **{**kw, "batch_augment": False}, batch_path_workers=cpu)
    assert per_image.train.num_workers == 1
    assert make_loaders(bundle, **kw).train.num_workers == 1  # not asked (a GPU run)
