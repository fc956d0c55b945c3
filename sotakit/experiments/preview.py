"""A recipe as it would run on a data set and this machine, without training (`recipes show --data`)."""

from __future__ import annotations

import torch

from ..data.datasets import peek_native_size
from ..recipes import Recipe, resolve


def resolve_for_data(recipe: Recipe, data: str) -> tuple[Recipe, list[str]]:
    """``recipe`` resolved for ``data`` (its image size) and this machine (CUDA, cores), with ``data``
    set, plus the notes on what changed. fit() applies the same rules when the run starts."""
    resolved, notes = resolve(recipe, native_size=peek_native_size(data),
                              cuda_available=torch.cuda.is_available())
    return resolved.replace(data=data), notes
