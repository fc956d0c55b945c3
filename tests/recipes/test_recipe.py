"""The Recipe schema, presets, the ladder, flags and the scaling rules."""

from __future__ import annotations

import shlex

import pytest

from sotakit.cli import build_recipe, make_parser
from sotakit.recipes import (
    REFERENCE_FIELDS,
    Recipe,
    RecipeError,
    dump_recipe,
    list_presets,
    load_ladder,
    load_preset,
    load_recipe,
    make_recipe,
    preset_meta,
    resolve,
)
from sotakit.recipes.flags import check_unknown
from sotakit.train.recipe_kwargs import ema_alpha, train_crop_at
from sotakit.train.recipe_kwargs import run_warnings as warnings_for

# The reference script's defaults (torchvision 0.29 references/classification/train.py).
REFERENCE_DEFAULTS = {
    "data_path": "/datasets01/imagenet_full_size/061417/", "model": "resnet18", "device": "cuda",
    "batch_size": 32,
    "epochs": 90, "workers": 16, "opt": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
    "norm_weight_decay": None, "bias_weight_decay": None, "transformer_embedding_decay": None,
    "label_smoothing": 0.0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "lr_scheduler": "steplr",
    "lr_warmup_epochs": 0, "lr_warmup_method": "constant", "lr_warmup_decay": 0.01, "lr_step_size": 30,
    "lr_gamma": 0.1, "lr_min": 0.0, "print_freq": 10, "output_dir": ".", "resume": "", "start_epoch": 0,
    "cache_dataset": False, "sync_bn": False, "test_only": False, "auto_augment": None, "ra_magnitude": 9,
    "augmix_severity": 3, "random_erase": 0.0, "amp": False, "world_size": 1, "dist_url": "env://",
    "model_ema": False, "model_ema_steps": 32, "model_ema_decay": 0.99998,
    "use_deterministic_algorithms": False,
    "interpolation": "bilinear", "val_resize_size": 256, "val_crop_size": 224, "train_crop_size": 224,
    "clip_grad_norm": None, "ra_sampler": False, "ra_reps": 3, "weights": None, "backend": "pil",
    "use_v2": False,
}

SEED_COMMAND = (
    "--model resnet50 --batch-size 128 --lr 0.5 --lr-scheduler cosineannealinglr --lr-warmup-epochs 5 "
    "--lr-warmup-method linear --auto-augment ta_wide --epochs 600 --random-erase 0.1 --weight-decay 0.00002 "
    "--norm-weight-decay 0.0 --label-smoothing 0.1 --mixup-alpha 0.2 --cutmix-alpha 1.0 "
    "--train-crop-size 176 --model-ema --val-resize-size 232 --ra-sampler --ra-reps 4")


def parse_train(cmd: str) -> Recipe:
    argv = ["train", *shlex.split(cmd)]
    parser, train = make_parser()
    check_unknown(argv[1:], train)
    return build_recipe(parser.parse_args(argv))


def test_reference_fields_and_defaults():
    assert len(REFERENCE_FIELDS) == 51
    assert set(REFERENCE_FIELDS) == set(REFERENCE_DEFAULTS)
    r = Recipe()
    assert {k: getattr(r, k) for k in REFERENCE_FIELDS} == REFERENCE_DEFAULTS


def test_seed_command_line_resolves_to_v2_preset():
    from_flags = parse_train(SEED_COMMAND)
    preset = load_preset("torchvision-v2")
    for k in REFERENCE_FIELDS:
        assert getattr(from_flags, k) == getattr(preset, k), k


def test_seed_command_line_and_v2_preset_run_alike_on_eight_processes():
    """Resolved for the 8 processes the blog's command line was written for, nothing differs: the
    preset's lr_ref_batch (1024 = 8 x 128) leaves lr at 0.5. On fewer processes the preset scales
    its lr down while a bare command line is taken literally, as the reference script does."""
    machine = dict(native_size=224, cuda_available=True, cpu_count=64)
    a, _ = resolve(parse_train(SEED_COMMAND), world_size=8, **machine)
    b, _ = resolve(load_preset("torchvision-v2"), world_size=8, **machine)
    assert {k: getattr(a, k) for k in REFERENCE_FIELDS} == {k: getattr(b, k) for k in REFERENCE_FIELDS}
    one, _ = resolve(load_preset("torchvision-v2"), world_size=1, **machine)
    assert one.lr == 0.5 / 8


def test_reference_aliases():
    r = parse_train("-b 64 -j 3 --wd 0.05")
    assert (r.batch_size, r.workers, r.weight_decay) == (64, 3, 0.05)
    assert parse_train("--data-path /some/folder").data == "/some/folder"


def test_flags_override_preset_and_bool_can_be_switched_off():
    r = parse_train("--recipe torchvision-v2 --epochs 7 --no-model-ema")
    assert (r.epochs, r.model_ema, r.lr, r.recipe_name) == (7, False, 0.5, "torchvision-v2")


@pytest.mark.parametrize("cmd, message", [
    ("--learning-rate 0.1", "Did you mean '--lr'"),
    ("--lr-schedular steplr", "Did you mean '--lr-scheduler'"),
    ("--opt adam", "Did you mean 'adamw'"),
    ("--auto-augment ta_wid", "Did you mean 'ta_wide'"),
    ("--epochs ten", "epochs must be an integer"),
    ("--label-smoothing 1.5", "label_smoothing must be in [0, 1]"),
    ("--auto-augment ra --ra-magnitude 31", "ra_magnitude must be in 0..30"),
    ("--recipe torchvision-v3", "Did you mean 'torchvision-v2'"),
])
def test_invalid_input_fails_with_the_fix(cmd, message):
    with pytest.raises(RecipeError) as e:
        parse_train(cmd)
    assert message in str(e.value)


def test_every_preset_loads_with_meta_source():
    for name in list_presets():
        r = load_preset(name)
        assert isinstance(r, Recipe)
        assert "https://" in preset_meta(name)["source"]  # the public write-up (issue 9), not seeds/


def test_ladder_is_stacked_and_ends_at_v2():
    steps = load_ladder("torchvision")
    assert [s.name for s in steps][:3] == ["tv-baseline", "tv-lr-optimizations", "tv-trivialaugment"]
    assert len(steps) == 13
    assert steps[0].recipe.replace(recipe_name="") == load_preset("torchvision-v1").replace(recipe_name="")
    # each step keeps what the previous ones set
    assert steps[2].recipe.lr == 0.5 and steps[2].recipe.auto_augment == "ta_wide"
    assert steps[-1].recipe.replace(recipe_name="") == load_preset("torchvision-v2").replace(recipe_name="")
    # the blog's table: absolute diff of the last step
    assert round(steps[-1].paper_acc1 - steps[0].paper_acc1, 3) == 4.728
    assert [s.long for s in steps].index(True) == 3


def test_small_image_scaling_keeps_ratios_and_lr_is_linear_in_global_batch():
    v2 = load_preset("torchvision-v2")
    r, notes = resolve(v2, native_size=28, world_size=2, cuda_available=False, cpu_count=2)
    assert (r.val_crop_size, r.train_crop_size, r.val_resize_size) == (
        28, round(176 * 28 / 224), round(232 * 28 / 224))
    assert r.lr == pytest.approx(0.5 * 128 * 2 / 1024)
    assert r.device == "cpu" and r.workers == 0 and r.world_size == 2
    # resolving a resolved recipe changes nothing (resume re-resolves the saved recipe)
    assert resolve(r, native_size=28, world_size=2, cuda_available=False, cpu_count=2)[0] == r
    big, _ = resolve(v2, native_size=160, cuda_available=True, cpu_count=8)
    assert (big.train_crop_size, big.val_crop_size, big.device, big.workers) == (176, 224, "cuda", 7)
    assert any("linear scaling" in n for n in notes)


@pytest.mark.parametrize("asked, cores, device, expected", [
    (16, 2, "cpu", 0),  # the reference default on a 2-core CPU: loading in the training process
    (1, 2, "cpu", 1),   # a count asked for is kept up to cores - 1
    (3, 2, "cpu", 1),
    (16, 8, "cpu", 7),
    (16, 2, "cuda", 1),
])
def test_worker_cap(asked, cores, device, expected):
    r, _ = resolve(make_recipe(workers=asked, device=device), native_size=224, cuda_available=True,
                   cpu_count=cores)
    assert r.workers == expected


def test_recipe_file_round_trip(tmp_path):
    r = make_recipe(load_preset("tv-mixup"), epochs=30, data="cifar10")
    path = tmp_path / "r.toml"
    path.write_text(dump_recipe(r, {"source": "test"}))
    assert load_recipe(path) == r
    bad = tmp_path / "bad.toml"
    bad.write_text("[recipe]\nlearning_rate = 0.1\n")
    with pytest.raises(RecipeError, match="unknown key 'learning_rate'"):
        load_recipe(bad)


def test_config_file_then_flags(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[meta]\nbase = "torchvision-v1"\n[recipe]\nepochs = 4\nlr = 0.2\n')
    r = parse_train(f"--config {cfg} --lr 0.3")
    assert (r.model, r.epochs, r.lr) == ("resnet50", 4, 0.3)


def test_warnings_say_why():
    w = warnings_for(make_recipe(ra_sampler=True, ra_reps=1))
    assert any("repeats nothing" in x for x in w)
    w = warnings_for(make_recipe(backend="tensor", sync_bn=True))
    assert "--backend is accepted for compatibility and has no effect in sotakit" in w
    assert any("--sync-bn only applies under DDP" in x for x in w)
    w = warnings_for(make_recipe(mixup_alpha=0.2, batch_size=1))
    assert any("mixed with itself" in x for x in w)
    # EMA horizon 1/alpha vs the number of updates in the run
    r = make_recipe(model_ema=True, epochs=2, batch_size=32, model_ema_steps=32)
    alpha = (1 - 0.99998) * 32 * 32 / 2
    assert ema_alpha(r) == pytest.approx(alpha)
    w = warnings_for(r, steps_per_epoch=100)  # 6 updates, horizon ~98
    assert any("EMA averages over ~98 updates but the run makes only 6" in x for x in w)
    assert not any("EMA" in x for x in warnings_for(r, steps_per_epoch=10_000))


def test_progressive_resize_schedule_and_scaling():
    r = make_recipe(epochs=8, train_crop_size=28, val_crop_size=28, val_resize_size=28, progressive_resize=20)
    # linear from 20 at epoch 0 to 28 at epoch round(0.75 * 8) - 1 = 5, then constant
    assert [train_crop_at(r, e) for e in range(8)] == [20, 22, 23, 25, 26, 28, 28, 28]
    assert train_crop_at(make_recipe(epochs=8), 3) == 224
    preset = load_preset("torchvision-v2")  # train crop 176: a preset's size, rescaled for small images
    assert resolve(preset, native_size=28, cpu_count=2)[0].train_crop_size == 22  # 176 * 28 / 224
    big = make_recipe(progressive_resize=128, train_crop_size=176)  # typed: kept, so the pair stays valid
    assert resolve(big, native_size=28, cpu_count=2)[0].progressive_resize == 128
    with pytest.raises(RecipeError, match="must not exceed train_crop_size"):  # typed 128 over a rescaled 22
        resolve(make_recipe(preset, progressive_resize=128), native_size=28, cpu_count=2)
    # the same sizes typed by the user (no preset): never rescaled, and said so (issue 10)
    typed, notes = resolve(make_recipe(train_crop_size=28), native_size=28, cpu_count=2)
    assert (typed.train_crop_size, typed.val_crop_size, typed.val_resize_size) == (28, 28, 32)
    assert "train crop 28 kept (given)" in notes[0]
    with pytest.raises(RecipeError, match="must not exceed train_crop_size"):
        make_recipe(progressive_resize=300)


def test_warmup_as_long_as_the_run_is_accepted_with_one_note():
    """Issue 9.1: TorchVision's train.py accepts it (the run stays in warm-up); so does every command."""
    r = parse_train("--recipe fashion-mnist-demo --epochs 1 --train-limit 2000 --test-limit 500")
    assert (r.epochs, r.lr_warmup_epochs) == (1, 1)
    notes = [w for w in warnings_for(r) if "warm-up" in w]
    assert notes == ["--lr-warmup-epochs 1 >= --epochs 1: the whole run is warm-up, as in TorchVision's "
                     "train.py; the lr rises linearly from 0.01 x lr and ends at 1 x lr (lr 0.2) and the "
                     "cosineannealinglr schedule never starts (use --lr-warmup-epochs 0 or fewer to reach "
                     "it)"]
    assert parse_train("--recipe torchvision-v2 --epochs 2").lr_warmup_epochs == 5
    assert not any("warm-up" in w for w in warnings_for(parse_train("--recipe torchvision-v2 --epochs 6")))


def test_fastai_ladders_stack_in_the_seeds_order_and_end_at_the_chapter_s_recipe():
    ch7 = load_ladder("fastai-ch7")
    assert [s.name.removeprefix("fastai-") for s in ch7] == [
        "baseline", "mixed-precision", "normalization", "progressive-resizing", "tta", "mixup",
        "label-smoothing", "all-combined"]
    assert ch7[-1].recipe.replace(recipe_name="") == load_preset("fastai-imagenette").replace(recipe_name="")
    first = ch7[0].recipe
    assert (first.model, first.lr_scheduler, first.lr, first.normalize, first.amp) == (
        "xresnet50", "onecycle", 3e-3, "none", False)
    assert ch7[2].recipe.normalize == "imagenet" and ch7[4].recipe.tta == "4"
    assert [s.long for s in ch7].index(True) == 5  # mixup: 15 epochs against the baseline's 5
    nn = load_ladder("nn-tools")
    assert [s.name for s in nn] == ["nn-sgd-step", "nn-lr-finder", "nn-one-cycle", "nn-adamw"]
    sgd, finder = nn[0].recipe, nn[1].recipe
    assert (sgd.lr_scheduler, sgd.lr_step_size, sgd.lr, finder.lr_auto) == ("steplr", 30, 0.1, True)
    assert (nn[2].recipe.lr_pct_start, nn[2].recipe.lr_div_final, nn[3].recipe.opt) == (0.3, 2.5e5, "adamw")
    assert [s.paper_acc1 for s in nn] == [69.0, 78.0, 79.5, 82.6]
