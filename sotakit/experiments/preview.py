"""A recipe as it would run on a data set and this machine, without training (`recipes show --data`,
`train --dry-run`)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.catalog import get_spec
from ..data.datasets import count_train_images, peek_native_size
from ..recipes import Recipe, resolve, training_images
from ..train.recipe_kwargs import run_warnings


def resolve_for_data(recipe: Recipe, data: str, *, data_root: str | None = None) -> tuple[Recipe, list[str]]:
    """``recipe`` resolved for ``data`` (its image size and, for a folder, its number of training
    images) and this machine (CUDA, cores), with ``data`` (and the reference's ``data_path``) set,
    plus the notes and warnings the run would print. fit() applies the same rules when it starts;
    for a catalog name the small-data rule waits for the loaded data."""
    if not Path(data).is_dir():
        get_spec(data)  # neither a folder nor a catalog name: says so (with a hint for a typo)
    data = str(Path(data).resolve()) if Path(data).is_dir() else data
    n = count_train_images(data)
    train_images = training_images(n, recipe) if n is not None else None
    resolved, notes = resolve(recipe, native_size=peek_native_size(data, data_root),
                              cuda_available=torch.cuda.is_available(), train_images=train_images)
    resolved = resolved.replace(data=data, data_path=data)
    steps = -(-train_images // (resolved.batch_size * resolved.world_size)) if train_images else None
    return resolved, notes + run_warnings(resolved, steps, train_images=train_images)
