"""recipe.toml is written by a TOML library: any string round-trips, None fields stay comments,
files written by the former hand writer still load; field types come from the evaluated annotations."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from sotakit.recipes import Recipe, dump_recipe, load_preset, load_recipe, make_recipe
from sotakit.recipes.recipe import FIELDS, field_type


def test_field_types_are_the_annotations_with_optional_unwrapped():
    assert field_type("batch_size") is int and field_type("lr") is float
    assert field_type("model_ema") is bool and field_type("model") is str
    assert field_type("norm_weight_decay") is float  # Optional[float]
    assert field_type("auto_augment") is str  # Optional[str]
    for name, f in FIELDS.items():
        if f.default is not None:
            assert type(f.default) is field_type(name), name


def _hand_written(recipe: Recipe, meta: dict | None = None) -> str:
    """recipe.toml exactly as the former hand writer produced it (run directories hold such files)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
    lines = ["[meta]", *(f"{k} = {value(v)}" for k, v in meta.items()), ""] if meta else []
    lines.append("[recipe]")
    lines += [f"# {k} = (unset)" if v is None else f"{k} = {value(v)}" for k, v in recipe.to_dict().items()]
    return "\n".join(lines) + "\n"


def round_trip(tmp_path, recipe: Recipe, meta: dict | None = None) -> Recipe:
    path = tmp_path / "recipe.toml"
    path.write_text(dump_recipe(recipe, meta), encoding="utf-8")
    return load_recipe(path)


NASTY = 'line one\nline "two" C:\\runs\\x \x07bell\ttab \x1b[31m \x7f é'


def test_strings_with_newline_quote_backslash_and_control_characters_round_trip(tmp_path):
    r = make_recipe(run_name=NASTY, recipe_name=NASTY, data="folder\\with\"quote\x00", auto_augment="ra")
    assert round_trip(tmp_path, r, {"notes": NASTY, "source": "x"}) == r
    doc = tomllib.loads(dump_recipe(r, {"notes": NASTY}))
    assert doc["meta"]["notes"] == NASTY and doc["recipe"]["run_name"] == NASTY
    # The former writer left \x07 raw, which TOML forbids: its file could not be read back at all.
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(_hand_written(r))


def test_none_fields_stay_comments_and_round_trip(tmp_path):
    r = make_recipe(norm_weight_decay=0.0, clip_grad_norm=None, weights=None)
    text = dump_recipe(r)
    assert "# clip_grad_norm = (unset)\n" in text and "# weights = (unset)\n" in text
    assert "norm_weight_decay = 0.0\n" in text
    assert "clip_grad_norm" not in tomllib.loads(text)["recipe"]
    assert round_trip(tmp_path, r) == r


@pytest.mark.parametrize("name", ["tv-mixup", "torchvision-v2"])
def test_output_is_unchanged_for_plain_values_and_old_files_load(tmp_path, name):
    r = make_recipe(load_preset(name), lr=2e-05, weight_decay=float("inf"), run_name='a "b" \\c')
    meta = {"title": "step", "notes": "lr 0.1 -> 0.2; workers 16 -> 0"}
    assert dump_recipe(r, meta) == _hand_written(r, meta)  # same bytes as the files already on disk
    old = tmp_path / "old.toml"
    old.write_text(_hand_written(r, meta))
    assert load_recipe(old) == r
    assert round_trip(tmp_path, r, meta) == r


def test_every_field_round_trips_with_a_non_default_value(tmp_path):
    changes = {}
    for name, f in FIELDS.items():
        t = field_type(name)
        if t is bool:
            changes[name] = not f.default
        elif t is str and f.metadata["choices"] is None and name not in ("data", "model"):
            changes[name] = f"{name}\n\x07\"\\"
    r = dataclasses.replace(Recipe(), **changes)  # replace: no validation, any string goes
    path = tmp_path / "recipe.toml"
    path.write_text(dump_recipe(r))
    written = {k: v for k, v in r.to_dict().items() if v is not None}
    assert tomllib.loads(path.read_text())["recipe"] == written
