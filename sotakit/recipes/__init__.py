"""Recipes: the Recipe dataclass, presets and ladders as data, flags, and resolution rules (a leaf)."""

from .presets import (LadderStep, dump_recipe, list_ladders, list_presets, load_ladder, load_preset,
                      load_recipe, preset_meta, resolve)
from .recipe import (REFERENCE_FIELDS, Recipe, RecipeError, ema_alpha, flag_of, make_recipe, train_crop_at,
                     validate, warnings_for)

__all__ = ["LadderStep", "Recipe", "RecipeError", "REFERENCE_FIELDS", "dump_recipe", "ema_alpha", "flag_of",
           "list_ladders", "list_presets", "load_ladder", "load_preset", "load_recipe", "make_recipe",
           "preset_meta", "resolve", "train_crop_at", "validate", "warnings_for"]
