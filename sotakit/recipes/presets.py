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

from .recipe import FIELDS, Recipe, RecipeError, closest, make_recipe

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


def resolve(recipe: Recipe, *, native_size: int | None, world_size: int = 1,
            cuda_available: bool = False, cpu_count: int | None = None) -> tuple[Recipe, list[str]]:
    """The recipe as it will run on this data and machine, plus notes on what was changed and why.

    Rules (documented in README "Scaling rules"):
      * size: for small images (native side <= 64 px) the native size becomes the eval crop and the
        preset's train-crop/eval-crop and resize/eval-crop ratios are kept;
      * learning rate: with ``lr_ref_batch`` set, lr scales linearly with the global batch
        (``lr * batch_size * world_size / lr_ref_batch``, Goyal et al. 2017);
      * device: ``cuda`` without a GPU becomes ``cpu``;
      * workers: capped at the cores left after the training process's own; on a CPU device with
        at most 2 cores the reference default (16) becomes 0: a worker gained nothing measurable
        there (benchmarks/results/throughput-*). Another count asked for is kept up to that cap.
    """
    notes: list[str] = []
    changes: dict[str, Any] = {"world_size": world_size}
    if native_size is not None and native_size <= SMALL_IMAGE and recipe.val_crop_size != native_size:
        ratio = native_size / recipe.val_crop_size
        changes.update(
            val_crop_size=native_size,
            train_crop_size=max(8, round(recipe.train_crop_size * ratio)),
            val_resize_size=max(native_size, round(recipe.val_resize_size * ratio)),
            progressive_resize=(max(8, round(recipe.progressive_resize * ratio))
                                if recipe.progressive_resize else 0),
        )
        notes.append(
            f"small images ({native_size} px): train crop "
            f"{recipe.train_crop_size}->{changes['train_crop_size']}, val resize "
            f"{recipe.val_resize_size}->{changes['val_resize_size']}, val crop "
            f"{recipe.val_crop_size}->{native_size}")
    if recipe.lr_ref_batch:
        global_batch = recipe.batch_size * world_size
        lr = recipe.lr * global_batch / recipe.lr_ref_batch
        if global_batch != recipe.lr_ref_batch:
            changes.update(lr=lr, lr_ref_batch=global_batch)
            notes.append(f"lr {recipe.lr:g} for global batch {recipe.lr_ref_batch} -> {lr:g} for global "
                         f"batch {global_batch} (linear scaling)")
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
