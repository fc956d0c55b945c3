"""Recipe -> keyword arguments, one adapter per helper (timm's ``optimizer_kwargs(cfg)``).

The only place Recipe field names meet helper parameter names, and where the values derived from a
recipe (EMA decay, the crop size of each epoch, the checkpoint interval, schedule lengths in epochs
or steps) are computed. ``fit()``, run evaluation, the time estimate and every later entry point
call these; below them no helper takes a Recipe.

The tables map a helper's parameter to the Recipe field that fills it. They are what
``tests/train/test_recipe_kwargs.py`` reads: a key its helper does not accept fails there, and so
does a Recipe field that reaches no helper and is not listed as operational, compatibility-only
(``recipes.recipe``) or resolved before the edge (``RESOLVED_FIELDS``).
"""

from __future__ import annotations

from typing import Any

from ..evaluate import default_sizes, parse_tta
from ..recipes import Recipe
from ..recipes import warnings_for as recipe_warnings
from ..recipes.presets import MIN_BATCH, MIN_STEPS
from ..recipes.recipe import PER_STEP_SCHEDULERS, checkpoint_interval, flag_of

# make_loaders (sotakit.data): world_size, rank and pin_memory are the machine's, given by the caller.
LOADER_ARGS = {name: name for name in (
    "batch_size", "train_crop_size", "val_resize_size", "val_crop_size", "interpolation", "auto_augment",
    "ra_magnitude", "augmix_severity", "random_erase", "crop_min_scale", "color_jitter", "mixup_alpha",
    "cutmix_alpha", "ra_sampler", "ra_reps", "holdout", "seed", "workers", "train_limit", "test_limit",
    "kfold", "fold", "max_decode_errors", "pca_jitter", "pca_stats", "batch_augment")} | {
    "timeout": "loader_timeout"}
# cached_bundle (sotakit.data): the presize follows the crop and eval sizes of the resolved recipe
DATA_CACHE_ARGS = {"mode": "data_cache", "train_crop_size": "train_crop_size",
                   "val_resize_size": "val_resize_size", "val_crop_size": "val_crop_size",
                   "interpolation": "interpolation", "max_decode_errors": "max_decode_errors"}
# param_groups (sotakit.train.optim)
PARAM_GROUP_ARGS = {name: name for name in (
    "weight_decay", "norm_weight_decay", "bias_weight_decay", "transformer_embedding_decay")}
# build_optimizer (sotakit.train.optim)
OPTIMIZER_ARGS = {name: name for name in ("opt", "lr", "momentum", "weight_decay")}
# build_scheduler (sotakit.train.optim): lengths are converted to the schedule's unit in scheduler_kwargs
SCHEDULER_ARGS = {"lr_scheduler": "lr_scheduler", "warmup_method": "lr_warmup_method",
                  "warmup_decay": "lr_warmup_decay", "lr_min": "lr_min",
                  "pct_start": "lr_pct_start", "div": "lr_div", "div_final": "lr_div_final"}
# train_one_epoch (sotakit.train.loop): ema_in_warmup is derived per epoch in epoch_kwargs
EPOCH_ARGS = {"ema_steps": "model_ema_steps", "clip_grad_norm": "clip_grad_norm",
              "channels_last": "channels_last", "print_freq": "print_freq",
              "max_nonfinite_skips": "max_nonfinite_skips"}
# lr_find (sotakit.train.lr_finder): the range test trains as the run's steps do
LR_FIND_ARGS = {"clip_grad_norm": "clip_grad_norm", "channels_last": "channels_last"}
# tta_report (sotakit.evaluate.tta): tta parsed and the views' transform derived in tta_kwargs
TTA_ARGS = {"beta": "tta_beta", "seed": "seed", "channels_last": "channels_last"}
# make_train_transform (sotakit.data) for TTA's augmented views, at the eval crop
TTA_TRANSFORM_ARGS = {name: name for name in (
    "interpolation", "auto_augment", "ra_magnitude", "augmix_severity", "crop_min_scale", "color_jitter")}
# normalized (sotakit.data): the Normalize statistics of the run's bundle
NORMALIZE_ARGS = {"normalize": "normalize"}
# evaluate (sotakit.evaluate)
EVAL_ARGS = {"channels_last": "channels_last"}
# prepare_model (sotakit.train.fit)
MODEL_ARGS = {"weights": "weights", "channels_last": "channels_last", "sync_bn": "sync_bn"}
# compile_for_training (sotakit.train.fit)
COMPILE_ARGS = {"enabled": "compile"}
# amp_dtype_for (sotakit.train.fit)
AMP_ARGS = {"amp": "amp", "dtype": "amp_dtype"}
# set_backend_flags (sotakit.train.fit)
BACKEND_ARGS = {"deterministic": "use_deterministic_algorithms"}
# torch.nn.CrossEntropyLoss
CRITERION_ARGS = {"label_smoothing": "label_smoothing"}
# tune_resize (sotakit.evaluate): the candidate sizes default to a range around the crop
RESIZE_TUNING_ARGS = {"crop_size": "val_crop_size", "current": "val_resize_size",
                      "interpolation": "interpolation"}
# build_fine_tune_scheduler (sotakit.train.fine_tune): the phase lengths in steps, from fine_tune_kwargs
FINE_TUNE_ARGS = {"lr": "lr"}
# create_run_dir (sotakit.train.rundir): the name is derived in run_dir_kwargs
RUN_DIR_ARGS = {"output_dir": "output_dir"}

# Used before the edge: the command line maps --data-path to --data; resolve() scales the lr by
# lr_ref_batch and sets world_size from torchrun; recipe_name is recorded in recipe.toml; fit()'s
# machine probe (train.machine) sets amp and channels_last as machine_probe allows.
RESOLVED_FIELDS = ("data_path", "lr_ref_batch", "world_size", "recipe_name", "test_only", "machine_probe")


def _take(table: dict[str, str], recipe: Recipe) -> dict[str, Any]:
    return {param: getattr(recipe, field) for param, field in table.items()}


def loader_kwargs(recipe: Recipe) -> dict[str, Any]:
    """make_loaders' arguments."""
    return _take(LOADER_ARGS, recipe)


def data_cache_kwargs(recipe: Recipe) -> dict[str, Any]:
    """cached_bundle's arguments."""
    return _take(DATA_CACHE_ARGS, recipe)


def param_group_kwargs(recipe: Recipe) -> dict[str, Any]:
    return _take(PARAM_GROUP_ARGS, recipe)


def optimizer_kwargs(recipe: Recipe) -> dict[str, Any]:
    return _take(OPTIMIZER_ARGS, recipe)


def scheduler_kwargs(recipe: Recipe, *, steps_per_epoch: int) -> dict[str, Any]:
    """build_scheduler's arguments, lengths in epochs or, with --lr-per-step, in steps.

    ExponentialLR's gamma is per epoch in the recipe, so stepped per batch it becomes its
    ``steps_per_epoch``-th root. onecycle and flatcos always count steps (``resolve`` steps them per batch).
    """
    unit = steps_per_epoch if recipe.lr_per_step or recipe.lr_scheduler in PER_STEP_SCHEDULERS else 1
    gamma = recipe.lr_gamma ** (1 / unit) if recipe.lr_scheduler == "exponentiallr" else recipe.lr_gamma
    return {**_take(SCHEDULER_ARGS, recipe), "total": recipe.epochs * unit,
            "warmup": recipe.lr_warmup_epochs * unit, "step_size": recipe.lr_step_size * unit, "gamma": gamma}


def epoch_kwargs(recipe: Recipe, *, epoch: int) -> dict[str, Any]:
    """train_one_epoch's recipe arguments for epoch ``epoch``: the EMA only copies during warm-up."""
    return {**_take(EPOCH_ARGS, recipe), "ema_in_warmup": epoch < recipe.lr_warmup_epochs}


def lr_find_kwargs(recipe: Recipe) -> dict[str, Any]:
    return _take(LR_FIND_ARGS, recipe)


def tta_kwargs(recipe: Recipe) -> dict[str, Any]:
    """tta_report's arguments: passes or "flip" (None: off) and the training augmentation at the eval crop."""
    transform = {**_take(TTA_TRANSFORM_ARGS, recipe), "crop_size": recipe.val_crop_size}
    return {**_take(TTA_ARGS, recipe), "tta": parse_tta(recipe.tta), "transform": transform}


def normalize_kwargs(recipe: Recipe) -> dict[str, Any]:
    return _take(NORMALIZE_ARGS, recipe)


def eval_kwargs(recipe: Recipe) -> dict[str, Any]:
    return _take(EVAL_ARGS, recipe)


def model_build_kwargs(recipe: Recipe, *, num_classes: int, native_size: int) -> dict[str, Any]:
    """build_model's arguments: small images (64 px or less) get the stride-1 stem."""
    return {"name": recipe.model, "num_classes": num_classes, "small_input": native_size <= 64}


def input_size_kwargs(recipe: Recipe) -> dict[str, Any]:
    """check_input_size's arguments: every crop the run will feed the model (0: no progressive start)."""
    return {"sizes": (recipe.train_crop_size, recipe.val_crop_size, recipe.progressive_resize),
            "data": recipe.data}


def model_kwargs(recipe: Recipe) -> dict[str, Any]:
    return _take(MODEL_ARGS, recipe)


def compile_kwargs(recipe: Recipe) -> dict[str, Any]:
    return _take(COMPILE_ARGS, recipe)


def amp_kwargs(recipe: Recipe) -> dict[str, Any]:
    return _take(AMP_ARGS, recipe)


def backend_kwargs(recipe: Recipe) -> dict[str, Any]:
    return _take(BACKEND_ARGS, recipe)


def criterion_kwargs(recipe: Recipe) -> dict[str, Any]:
    return _take(CRITERION_ARGS, recipe)


def resize_tuning_kwargs(recipe: Recipe, *, sizes: list[int] | None = None) -> dict[str, Any]:
    """tune_resize's arguments: the run's eval crop, its current resize and the sizes to try."""
    return {**_take(RESIZE_TUNING_ARGS, recipe), "sizes": sizes or default_sizes(recipe.val_crop_size)}


def fine_tune_kwargs(recipe: Recipe, *, steps_per_epoch: int) -> dict[str, Any]:
    """build_fine_tune_scheduler's arguments: the frozen phase (--freeze-epochs) and the run, in steps."""
    return {**_take(FINE_TUNE_ARGS, recipe), "freeze_steps": recipe.freeze_epochs * steps_per_epoch,
            "total_steps": recipe.epochs * steps_per_epoch}


def run_dir_kwargs(recipe: Recipe) -> dict[str, Any]:
    """create_run_dir's arguments: the folder is named by --run-name, else the preset, else the model."""
    return {**_take(RUN_DIR_ARGS, recipe), "name": recipe.run_name or recipe.recipe_name or recipe.model}


def ema_kwargs(recipe: Recipe, *, steps_per_epoch: int) -> dict[str, Any] | None:
    """build_ema's arguments, or None without --model-ema."""
    return {"decay": 1.0 - ema_alpha(recipe, steps_per_epoch=steps_per_epoch)} if recipe.model_ema else None


def ema_updates(recipe: Recipe, *, steps_per_epoch: int) -> int:
    """How many times the run updates the EMA: every ``model_ema_steps`` steps."""
    return recipe.epochs * steps_per_epoch // recipe.model_ema_steps


def ema_alpha(recipe: Recipe, *, steps_per_epoch: int | None = None) -> float:
    """The share ``alpha`` of the model the EMA takes in per update (it keeps ``1 - alpha`` of itself).

    With ``--model-ema-horizon F``: ``alpha = 1 / (F x updates)``, an averaging horizon of a fraction F
    of the run's updates whatever the data set's size. Unset, the reference's decay adjustment:
    ``alpha = (1 - decay) * global_batch * ema_steps / epochs``, which fixes the horizon in *images*
    (pycls' trick the TorchVision blog adopted: ~915 updates, F ~0.04 on its ImageNet run), so on a
    small data set the horizon can exceed the run (``run_warnings`` says so).
    """
    if recipe.model_ema_horizon is not None and steps_per_epoch:
        updates = max(1, ema_updates(recipe, steps_per_epoch=steps_per_epoch))
        return min(1.0, 1.0 / (recipe.model_ema_horizon * updates))
    adjust = recipe.world_size * recipe.batch_size * recipe.model_ema_steps / recipe.epochs
    return min(1.0, (1.0 - recipe.model_ema_decay) * adjust)


MIN_STEPS_PER_EPOCH = MIN_STEPS  # fewer, and BatchNorm, the schedule and the EMA have little to work with
# Fewer optimizer steps in a whole run and a model trained from scratch stays near chance (measured: the
# torchvision-v2 preset, 2 epochs of 9 steps on 72 photos, ends at 33.3% of 3 classes; the small-folder
# preset's 72 steps reach 80% and more, tests/recipes/test_first_hour.py).
MIN_RUN_STEPS = 50


def saver_kwargs(recipe: Recipe) -> dict[str, Any]:
    """CheckpointSaver's interval: --checkpoint-every as (steps, seconds), 0 for unset."""
    every_steps, every_s = checkpoint_interval(recipe.checkpoint_every)
    return {"every_steps": every_steps, "every_s": every_s}


def train_crop_at(recipe: Recipe, epoch: int) -> int:
    """The training crop size of an epoch: fixed, or growing under --progressive-resize.

    Linear from ``progressive_resize`` at epoch 0 to ``train_crop_size`` at 3/4 of the run, then
    constant, so the last quarter trains at the size the model is evaluated near (fastbook ch. 7).
    With ``progressive_resize_epochs`` E, the chapter's two phases instead: E epochs small, then full size.
    """
    if not recipe.progressive_resize:
        return recipe.train_crop_size
    if recipe.progressive_resize_epochs:
        small = epoch < recipe.progressive_resize_epochs
        return recipe.progressive_resize if small else recipe.train_crop_size
    ramp = max(1, round(0.75 * recipe.epochs) - 1)
    t = min(1.0, epoch / ramp)
    return round(recipe.progressive_resize + t * (recipe.train_crop_size - recipe.progressive_resize))


def data_epoch_kwargs(recipe: Recipe, *, epoch: int) -> dict[str, Any]:
    """set_data_epoch's recipe arguments: the epoch's crop size and the seed of order and workers."""
    return {"crop_size": train_crop_at(recipe, epoch), "seed": recipe.seed}


def run_warnings(recipe: Recipe, steps_per_epoch: int | None = None,
                 train_images: int | None = None, channels: int | None = None) -> list[str]:
    """recipes.warnings_for, plus what only the engine can tell: a batch larger than the training set,
    epochs of fewer than ~10 steps, a run of fewer than ~50 steps, an EMA horizon longer than the run, PCA
    jitter on one-channel data."""
    out = recipe_warnings(recipe)
    if recipe.pca_jitter and channels == 1:
        out.append(f"{flag_of('pca_jitter')} {recipe.pca_jitter:g} has no effect: the images have one "
                   "channel and no colour to shift (drop it; --color-jitter varies brightness and contrast)")
    global_batch = recipe.batch_size * recipe.world_size
    if train_images is not None and global_batch > train_images:
        out.append(f"the global batch ({global_batch}) is larger than the training set ({train_images} "
                   f"images): every epoch is one step; use {flag_of('batch_size')} "
                   f"{max(1, train_images // MIN_STEPS_PER_EPOCH)} or so")
    elif (steps_per_epoch is not None and steps_per_epoch < MIN_STEPS_PER_EPOCH
          and recipe.batch_size > MIN_BATCH):  # at MIN_BATCH a smaller batch costs BatchNorm more
        out.append(f"an epoch is only {steps_per_epoch} steps (batch {global_batch}): BatchNorm, the "
                   f"schedule and the EMA get few updates; a smaller {flag_of('batch_size')} gives "
                   f"{MIN_STEPS_PER_EPOCH} or more")
    spe = steps_per_epoch
    if spe and recipe.epochs * spe < MIN_RUN_STEPS and not recipe.weights:
        wanted = -(-2 * MIN_RUN_STEPS // spe)  # epochs for ~100 steps
        out.append(f"the whole run is only {recipe.epochs * spe} optimizer steps ({recipe.epochs} epochs x "
                   f"{spe}): too few for a model trained from scratch to learn much; "
                   f"{flag_of('epochs')} {wanted} gives {wanted * spe}")
    if recipe.model_ema and steps_per_epoch:
        alpha = ema_alpha(recipe, steps_per_epoch=steps_per_epoch)
        updates = ema_updates(recipe, steps_per_epoch=steps_per_epoch)
        if updates == 0:
            out.append(f"the EMA is never updated: the run makes {recipe.epochs * steps_per_epoch} steps and "
                       f"the EMA updates every {recipe.model_ema_steps}; lower {flag_of('model_ema_steps')}")
        elif alpha < 1.0 and 1.0 / alpha > updates:
            out.append(
                f"EMA averages over ~{1 / alpha:.0f} updates but the run makes only {updates}: "
                f"the EMA model will lag far behind; set {flag_of('model_ema_horizon')} 0.1, or lower "
                f"{flag_of('model_ema_decay')} or {flag_of('model_ema_steps')}")
    return out
