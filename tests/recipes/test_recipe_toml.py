"""recipe.toml is written by a TOML library: any string round-trips, None fields stay comments,
files written by the former hand writer still load; field types come from the evaluated annotations."""

from __future__ import annotations

from sotakit.recipes.recipe import FIELDS, field_type


def test_field_types_are_the_annotations_with_optional_unwrapped():
    assert field_type("batch_size") is int and field_type("lr") is float
    assert field_type("model_ema") is bool and field_type("model") is str
    assert field_type("norm_weight_decay") is float  # Optional[float]
    assert field_type("auto_augment") is str  # Optional[str]
    for name, f in FIELDS.items():
        if f.default is not None:
            assert type(f.default) is field_type(name), name
