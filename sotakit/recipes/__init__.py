"""Recipes: the Recipe dataclass, presets and ladders as data, flags, and resolution rules (a leaf)."""

from .presets import (
    LadderStep,
    dump_recipe,
    list_ladders,
    list_presets,
    load_ladder,
    load_preset,
    load_recipe,
    preset_meta,
    recipe_for_data,
    resolve,
    training_images,
)
from .recipe import REFERENCE_FIELDS, Recipe, RecipeError, flag_of, make_recipe, validate, warnings_for

__all__ = ["LadderStep", "Recipe", "RecipeError", "REFERENCE_FIELDS", "dump_recipe", "flag_of",
           "list_ladders", "list_presets", "load_ladder", "load_preset", "load_recipe", "make_recipe",
           "preset_meta", "recipe_for_data", "resolve", "training_images", "validate", "warnings_for"]
