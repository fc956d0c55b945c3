"""Presets and ladders as data files, recipe files, and the one place recipes meet the machine.

A preset is a TOML file with ``[meta]`` (title, source) and ``[recipe]`` (only the keys that differ
from the reference defaults). A ladder lists stacked steps, each holding only the keys it changes;
every step is also a preset by name. ``resolve`` applies the documented scaling rules (image size,
batch/learning rate, device, workers) so a recipe written for 8 GPUs on ImageNet runs sensibly on
one CPU on 28 px images.

Recipe files are read with ``tomllib`` and written with ``tomlkit``, which escapes every string
correctly and keeps the ``# key = (unset)`` comments for None fields (TOML has no null). That one
third-party import is allowed here: ``recipes`` is a leaf of sotakit's imports (it imports nothing
from sotakit), not of third-party ones.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit

from .model_size import auto_mixup_alpha
from .recipe import FIELDS, PER_STEP_SCHEDULERS, Recipe, RecipeError, closest, make_recipe

PRESET_DIR = Path(__file__).parent / "presets"
LADDER_DIR = Path(__file__).parent / "ladders"


@dataclass(frozen=True)
class LadderStep:
    name: str
    title: str
    changes: dict[str, Any]
    recipe: Recipe
    paper_acc1: float | None = None
    paper_acc5: float | None = None
    long: bool = False


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not valid TOML: {e}") from None


def list_ladders() -> list[str]:
    return sorted(p.stem for p in LADDER_DIR.glob("*.toml"))


def load_ladder(name: str) -> list[LadderStep]:
    """The ladder's steps, each with its cumulative recipe (base preset + all changes so far)."""
    path = LADDER_DIR / f"{name}.toml"
    if not path.exists():
        raise RecipeError(f"unknown ladder {name!r}; known: "
                          f"{', '.join(list_ladders())}.{closest(name, list_ladders())}")
    doc = _read_toml(path)
    recipe = load_preset(doc["meta"]["base"])
    steps, long = [], False
    for s in doc["steps"]:
        recipe = make_recipe(recipe, **s.get("set", {}), recipe_name=s["name"])
        long = long or s.get("long", False)
        steps.append(LadderStep(s["name"], s["title"], dict(s.get("set", {})), recipe,
                                s.get("paper_acc1"), s.get("paper_acc5"), long))
    return steps


def _ladder_steps() -> dict[str, LadderStep]:
    return {s.name: s for lad in list_ladders() for s in load_ladder(lad)}


def list_presets() -> list[str]:
    files = [p.stem for p in PRESET_DIR.glob("*.toml")]
    steps = [s for lad in list_ladders() for s in _ladder_names(lad)]
    return sorted(files) + steps


def _ladder_names(name: str) -> list[str]:
    return [s["name"] for s in _read_toml(LADDER_DIR / f"{name}.toml")["steps"]]


def preset_meta(name: str) -> dict[str, Any]:
    path = PRESET_DIR / f"{name}.toml"
    if path.exists():
        return _read_toml(path).get("meta", {})
    for lad in list_ladders():
        doc = _read_toml(LADDER_DIR / f"{lad}.toml")
        for s in doc["steps"]:
            if s["name"] == name:
                return {"title": s["title"], "source": doc["meta"]["source"], "ladder": lad}
    raise RecipeError(f"unknown recipe {name!r}.{closest(name, list_presets())} Run `sotakit recipes` to "
                      "list them.")


def load_preset(name: str) -> Recipe:
    """A preset by name: a file in presets/ or a ladder step."""
    path = PRESET_DIR / f"{name}.toml"
    if path.exists():
        return load_recipe(path, recipe_name=name)
    steps = _ladder_steps()
    if name in steps:
        return steps[name].recipe
    raise RecipeError(f"unknown recipe {name!r}.{closest(name, list_presets())} Run `sotakit recipes` to "
                      "list them.")


def load_recipe(path: str | Path, base: Recipe | None = None, **extra: Any) -> Recipe:
    """A recipe file: ``[recipe]`` table (or top-level keys); an optional ``[meta] base`` preset."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"recipe file {path} does not exist")
    doc = _read_toml(path)
    values = doc.get("recipe", {k: v for k, v in doc.items() if k != "meta"})
    base_name = doc.get("meta", {}).get("base")
    if base_name:
        base = load_preset(base_name)
    unknown = [k for k in values if k not in FIELDS]
    if unknown:
        from .flags import key_hint
        if "recipe" not in doc and isinstance(values[unknown[0]], dict):  # e.g. [train] instead of [recipe]
            raise RecipeError(f"{path} has no [recipe] table (found [{unknown[0]}]): put the recipe keys "
                              "under [recipe]")
        raise RecipeError(f"{path}: unknown key {unknown[0]!r}.{key_hint(unknown[0])}")
    return make_recipe(base, **values, **extra)


def dump_recipe(recipe: Recipe, meta: dict[str, Any] | None = None) -> str:
    """TOML text of a recipe (None values are written as comments, TOML having no null)."""
    doc = tomlkit.document()
    if meta:
        table = tomlkit.table()
        for k, v in meta.items():
            table.add(k, v)
        doc.add("meta", table)
    table = tomlkit.table()
    for k, v in recipe.to_dict().items():
        if v is None:
            table.add(tomlkit.comment(f"{k} = (unset)"))
        else:
            table.add(k, v)
    doc.add("recipe", table)
    return tomlkit.dumps(doc)


SMALL_IMAGE = 64  # images at most this many pixels a side count as "small"
IMAGENET_EVAL = 224  # the eval crop the ImageNet presets' sizes are written for


MIN_STEPS = 10  # an epoch of fewer steps gives BatchNorm, the schedule and the EMA little to work with
MIN_BATCH = 8  # the small-data rule does not go below this per-process batch (BatchNorm statistics)
SMALL_DATA_EMA_HORIZON = 0.1  # --model-ema-horizon the small-data rule sets when none is given


def training_images(n_images: int, recipe: Recipe) -> int:
    """How many images a training epoch sees: ``n_images`` after --train-limit, --holdout, --kfold."""
    n = min(n_images, recipe.train_limit) if recipe.train_limit else n_images
    if recipe.kfold:
        return n - n // recipe.kfold
    return n - round(recipe.holdout * n)


def _small_data(recipe: Recipe, train_images: int, world_size: int) -> tuple[dict[str, Any], str | None]:
    """The batch, lr, schedule and EMA changes of the small-data rule (see ``resolve``)."""
    global_batch = recipe.batch_size * world_size
    if train_images >= global_batch * MIN_STEPS:
        return {}, None
    fit = max(1, train_images // (MIN_STEPS * world_size))
    batch = max(MIN_BATCH, 1 << (fit.bit_length() - 1))  # largest power of two <= fit, at least MIN_BATCH
    if batch >= recipe.batch_size:
        return {}, None
    changes: dict[str, Any] = {"batch_size": batch, "lr_per_step": True}
    if not recipe.lr_ref_batch:  # the lr was set for the preset's batch: scale it with the batch below
        changes["lr_ref_batch"] = global_batch
    steps = -(-train_images // (batch * world_size))
    what = [f"batch {recipe.batch_size} -> {batch} ({steps} steps an epoch)", "warm-up and decay per step"]
    if recipe.model_ema:
        ema_steps = min(recipe.model_ema_steps, max(1, recipe.epochs * steps // 50))
        changes.update(model_ema_steps=ema_steps,
                       model_ema_horizon=recipe.model_ema_horizon or SMALL_DATA_EMA_HORIZON)
        what.append(f"EMA every {ema_steps} steps over the last "
                    f"{changes['model_ema_horizon']:g} of its updates")
    return changes, (f"small data ({train_images} training images < {MIN_STEPS} steps x batch "
                     f"{global_batch}): {', '.join(what)}")


def given_fields(recipe: Recipe) -> set[str]:
    """The fields whose value the user chose (command line, config file, --set, --grid): those that differ
    from the preset the recipe names, or from the defaults when it names none."""
    origin = Recipe()
    if recipe.recipe_name:
        try:
            origin = load_preset(recipe.recipe_name)
        except RecipeError:
            pass
    return {k for k in FIELDS if getattr(recipe, k) != getattr(origin, k)}


def resolve(recipe: Recipe, *, native_size: int | None, world_size: int = 1,
            cuda_available: bool = False, cpu_count: int | None = None,
            train_images: int | None = None) -> tuple[Recipe, list[str]]:
    """The recipe as it will run on this data and machine, plus notes on what was changed and why.

    Rules (documented in README "Scaling rules"):
      * size: for small images (native side <= 64 px) the native size becomes the eval crop and the
        preset's train-crop/eval-crop and resize/eval-crop ratios are kept;
      * small data (``train_images``, see ``training_images``, fewer than 10 steps an epoch at the
        recipe's global batch): the batch becomes the largest power of two giving an epoch at least
        10 steps (not below 8), the lr follows linearly (next rule), warm-up and decay are stepped
        per batch (a 1-epoch warm-up is a ramp over its steps, not one epoch at 1% of the lr); with
        --model-ema the EMA updates at least ~50 times in the run (``model_ema_steps``) and averages
        over a tenth of its updates (``--model-ema-horizon 0.1`` unless set): the reference's decay,
        written for ImageNet's 1.28 M images, would average over more updates than the run makes;
      * learning rate: with ``lr_ref_batch`` set, lr scales linearly with the global batch
        (``lr * batch_size * world_size / lr_ref_batch``, Goyal et al. 2017);
      * mixup: ``--mixup-alpha auto`` becomes the Keras RegNets' alpha for the model's size
        (``model_size.auto_mixup_alpha``);
      * device: ``cuda`` without a GPU becomes ``cpu``;
      * workers: capped at the cores left after the training process's own; on a CPU device with
        at most 2 cores the reference default (16) becomes 0: a worker gained nothing measurable
        there (benchmarks/results/throughput-*). Another count asked for is kept up to that cap.
    """
    notes: list[str] = []
    changes: dict[str, Any] = {"world_size": world_size}
    if native_size is not None and native_size <= SMALL_IMAGE and recipe.val_crop_size != native_size:
        ratio = native_size / recipe.val_crop_size
        scaled = {
            "val_crop_size": native_size,
            "train_crop_size": max(8, round(recipe.train_crop_size * ratio)),
            "val_resize_size": max(native_size, round(recipe.val_resize_size * ratio)),
            "progressive_resize": (max(8, round(recipe.progressive_resize * ratio))
                                   if recipe.progressive_resize else 0),
        }
        given = given_fields(recipe)  # a size the user typed is theirs: only preset/default sizes rescale
        changes.update({k: v for k, v in scaled.items() if k not in given})
        said = [f"{label} {getattr(recipe, k)}->{scaled[k]}" if k not in given
                else f"{label} {getattr(recipe, k)} kept (given)"
                for k, label in (("train_crop_size", "train crop"), ("val_resize_size", "val resize"),
                                 ("val_crop_size", "val crop"))]
        notes.append(f"small images ({native_size} px): {', '.join(said)}")
    if train_images is not None:
        small, note = _small_data(recipe, train_images, world_size)
        if note:
            recipe = make_recipe(recipe, **small)
            notes.append(note)
    if recipe.freeze_epochs and not recipe.lr_per_step:
        changes["lr_per_step"] = True
        notes.append("--freeze-epochs: fastai's one-cycle schedules run per batch (lr_per_step on)")
    if recipe.lr_ref_batch:
        global_batch = recipe.batch_size * world_size
        lr = recipe.lr * global_batch / recipe.lr_ref_batch
        if global_batch != recipe.lr_ref_batch:
            changes.update(lr=lr, lr_ref_batch=global_batch)
            notes.append(f"lr {recipe.lr:g} for global batch {recipe.lr_ref_batch} -> {lr:g} for global "
                         f"batch {global_batch} (linear scaling)")
    if recipe.mixup_alpha == "auto":
        changes["mixup_alpha"] = auto_mixup_alpha(recipe.model)
        notes.append(f"--mixup-alpha auto: {changes['mixup_alpha']:g} for {recipe.model} (the Keras RegNets' "
                     "alpha for this size)")
    if recipe.lr_scheduler in PER_STEP_SCHEDULERS and not recipe.lr_per_step:
        changes["lr_per_step"] = True  # fastai's schedules move every batch
        notes.append(f"--lr-scheduler {recipe.lr_scheduler} is stepped every batch (lr_per_step on)")
    if recipe.device.startswith("cuda") and not cuda_available:
        changes["device"] = "cpu"
        notes.append("no CUDA device: running on cpu")
    cores = cpu_count or os.cpu_count() or 1
    # The training process itself keeps one core busy; more workers than the rest only thrash.
    max_workers = max(0, cores - 1)
    if changes.get("device", recipe.device) == "cpu" and cores <= 2 and recipe.workers == Recipe().workers:
        max_workers = 0
    if recipe.workers > max_workers:
        changes["workers"] = max_workers
        notes.append(f"workers {recipe.workers} -> {max_workers} ({cores} cores)")
    return make_recipe(recipe, **changes), notes


SMALL_FOLDER_IMAGES = 6000  # image passes in about a minute of small-folder (64 px) on 2 CPU cores
SMALL_IMAGE_IMAGES = 120_000  # ... and of fashion-mnist-demo (28 px)


def recipe_for_data(n_images: int, native_size: int | None) -> tuple[Recipe, str]:
    """The preset `sotakit train --data FOLDER` uses without --recipe, and the sentence that says which.

    Small images (<= 64 px a side) get fashion-mnist-demo, larger ones (photos) small-folder; the
    epochs are chosen so the run makes about a minute's image passes on 2 CPU cores (measured:
    README "Demo" and benchmarks), within 2..40 epochs. resolve() then fits batch, lr and EMA to
    the folder's size.
    """
    small = native_size is not None and native_size <= SMALL_IMAGE
    name, budget = (("fashion-mnist-demo", SMALL_IMAGE_IMAGES) if small
                    else ("small-folder", SMALL_FOLDER_IMAGES))
    epochs = max(2, min(40, round(budget / max(1, n_images))))
    base = load_preset(name)
    recipe = make_recipe(base, epochs=epochs, recipe_name=name, run_name=name)
    size = f"{native_size} px" if native_size else "unknown size"
    return recipe, (f"no --recipe: {name} for {n_images} training images of {size}, {epochs} epochs "
                    f"(about a minute on 2 CPU cores; choose another with --recipe, see `sotakit recipes`)")
