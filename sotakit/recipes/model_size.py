"""Regularization by model size: the mixup alpha the Keras RegNets were trained with.

"Training RegNets for tf.keras.applications" (A. Kane, 2022) raised mixup with model size ("Increase
augmentations and regularization when increasing model size"); its result tables give the alpha of
each of the 24 models: RegNetX up to 800MF none, RegNetY up to 800MF 0.2, both from 1.6GF to 4.0GF
0.2, 6.4GF to 8.0GF 0.3, 12GF and up 0.4. The size is read from the name (regnetx_002 is 0.2 GF,
torchvision's regnet_y_1_6gf 1.6 GF), so this leaf needs no model built.
"""

from __future__ import annotations

import re

from .recipe import RecipeError

_KERAS = re.compile(r"regnet([xy])_(\d{3})$")  # regnetx_002: 0.2 GF, regnety_120: 12 GF
_TORCHVISION = re.compile(r"regnet_([xy])_(\d+)(?:_(\d+))?(mf|gf)$")  # regnet_x_1_6gf, regnet_y_400mf


def regnet_size(model: str) -> tuple[str, float] | None:
    """("x" or "y", GF) of a RegNet name, None for other models."""
    if m := _KERAS.match(model):
        return m.group(1), int(m.group(2)) / 10
    if m := _TORCHVISION.match(model):
        value = float(f"{m.group(2)}.{m.group(3) or 0}")
        return m.group(1), value / 1000 if m.group(4) == "mf" else value
    return None


def auto_mixup_alpha(model: str) -> float:
    """The seed's mixup alpha for ``model`` (0.0: no mixup); RecipeError for a model that is no RegNet."""
    size = regnet_size(model)
    if size is None:
        raise RecipeError(f"mixup_alpha 'auto' follows the Keras RegNet table by model size, and {model!r} "
                          "is not a RegNet; give a number, e.g. --mixup-alpha 0.2")
    family, gf = size
    if gf <= 0.8:
        return 0.0 if family == "x" else 0.2
    if gf <= 4.0:
        return 0.2
    return 0.3 if gf <= 8.0 else 0.4
