"""The one edge between a Recipe and the helpers: every key is a parameter, every field is wired."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from torch import nn

import sotakit.train.recipe_kwargs as rk
from sotakit.data import cached_bundle, make_loaders, normalized, set_data_epoch
from sotakit.evaluate import evaluate, tta_report, tune_resize
from sotakit.models import build_model, check_input_size
from sotakit.recipes import Recipe, make_recipe
from sotakit.recipes.recipe import COMPATIBILITY_FIELDS, FIELDS, OPERATIONAL_FIELDS
from sotakit.train import (
    CheckpointSaver,
    amp_dtype_for,
    build_ema,
    build_optimizer,
    build_scheduler,
    param_groups,
    prepare_model,
    set_backend_flags,
    train_one_epoch,
)
from sotakit.train.fine_tune import build_fine_tune_scheduler
from sotakit.train.fit import compile_for_training
from sotakit.train.lr_finder import lr_find
from sotakit.train.rundir import create_run_dir

R = Recipe(model_ema=True)
# adapter -> (its keyword arguments for a reference recipe, the helper they are passed to)
ADAPTERS = {
    "loader_kwargs": (rk.loader_kwargs(R), make_loaders),
    "data_cache_kwargs": (rk.data_cache_kwargs(R), cached_bundle),
    "param_group_kwargs": (rk.param_group_kwargs(R), param_groups),
    "optimizer_kwargs": (rk.optimizer_kwargs(R), build_optimizer),
    "scheduler_kwargs": (rk.scheduler_kwargs(R, steps_per_epoch=7), build_scheduler),
    "epoch_kwargs": (rk.epoch_kwargs(R, epoch=0), train_one_epoch),
    "eval_kwargs": (rk.eval_kwargs(R), evaluate),
    "model_build_kwargs": (rk.model_build_kwargs(R, num_classes=10, native_size=28), build_model),
    "model_kwargs": (rk.model_kwargs(R), prepare_model),
    "input_size_kwargs": (rk.input_size_kwargs(R), check_input_size),
    "amp_kwargs": (rk.amp_kwargs(R), amp_dtype_for),
    "compile_kwargs": (rk.compile_kwargs(R), compile_for_training),
    "backend_kwargs": (rk.backend_kwargs(R), set_backend_flags),
    "criterion_kwargs": (rk.criterion_kwargs(R), nn.CrossEntropyLoss),
    "resize_tuning_kwargs": (rk.resize_tuning_kwargs(R), tune_resize),
    "run_dir_kwargs": (rk.run_dir_kwargs(R), create_run_dir),
    "ema_kwargs": (rk.ema_kwargs(R, steps_per_epoch=7), build_ema),
    "saver_kwargs": (rk.saver_kwargs(R), CheckpointSaver),
    "data_epoch_kwargs": (rk.data_epoch_kwargs(R, epoch=0), set_data_epoch),
    "lr_find_kwargs": (rk.lr_find_kwargs(R), lr_find),
    "tta_kwargs": (rk.tta_kwargs(R), tta_report),
    "normalize_kwargs": (rk.normalize_kwargs(R), normalized),
    "fine_tune_kwargs": (rk.fine_tune_kwargs(R, steps_per_epoch=7), build_fine_tune_scheduler),
}


def unknown_keys(kwargs: dict, helper) -> list[str]:
    """Keys of ``kwargs`` that ``helper`` does not take by name."""
    params = inspect.signature(helper).parameters
    return sorted(k for k in kwargs if k not in params)


def fields_read(path: Path, names=("recipe",)) -> set[str]:
    """Attributes read from a variable called ``recipe`` in a module (``recipe.lr`` -> "lr")."""
    tree = ast.parse(path.read_text())
    return {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id in names}


def reached_fields() -> set[str]:
    """Recipe fields an adapter table passes on, or the edge or fit() reads itself."""
    tables = [v for k, v in vars(rk).items() if k.endswith("_ARGS") and isinstance(v, dict)]
    here = Path(rk.__file__).parent
    return ({f for t in tables for f in t.values()} | fields_read(here / "recipe_kwargs.py")
            | fields_read(here / "fit.py"))


def unwired(reached: set[str]) -> list[str]:
    listed = set(OPERATIONAL_FIELDS) | set(COMPATIBILITY_FIELDS) | set(rk.RESOLVED_FIELDS)
    return sorted(set(FIELDS) - reached - listed)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_adapter_keys_are_parameters_of_their_helper(name):
    kwargs, helper = ADAPTERS[name]
    assert kwargs, f"{name} gives no arguments"
    bad = unknown_keys(kwargs, helper)
    assert not bad, f"{name} passes {bad}, which {helper.__name__} does not accept"


def test_every_adapter_is_checked_against_its_helper():
    adapters = {k for k, v in vars(rk).items() if k.endswith("_kwargs") and callable(v)}
    assert adapters == set(ADAPTERS), (
        f"adapters without a helper in this test: {sorted(adapters - set(ADAPTERS))}")


def test_every_recipe_field_reaches_a_helper_or_is_listed():
    missing = unwired(reached_fields())
    assert not missing, f"Recipe fields that reach no helper and are not listed as operational, " \
                        f"compatibility-only or resolved: {missing}"
    # reached by a table and read (a table value that is not a field would be a typo)
    tables = [v for k, v in vars(rk).items() if k.endswith("_ARGS") and isinstance(v, dict)]
    assert not {f for t in tables for f in t.values()} - set(FIELDS)


def test_the_checks_name_what_is_wrong():
    """The two checks fail by name on a broken adapter and on a field nobody wires."""
    assert unknown_keys({"batch_size": 8, "colour_jiter": 0.4}, make_loaders) == ["colour_jiter"]
    assert unwired(reached_fields() - {"color_jitter"}) == ["color_jitter"]


def test_derived_values():
    r = Recipe(model_ema=True, epochs=2, batch_size=32, model_ema_steps=32, lr_per_step=True,
               lr_scheduler="exponentiallr", lr_gamma=0.5, lr_warmup_epochs=1, checkpoint_every="10m")
    assert rk.ema_kwargs(r, steps_per_epoch=7)["decay"] == pytest.approx(1 - (1 - 0.99998) * 32 * 32 / 2)
    assert rk.ema_kwargs(r.replace(model_ema=False), steps_per_epoch=7) is None
    s = rk.scheduler_kwargs(r, steps_per_epoch=10)
    assert ((s["total"], s["warmup"], s["step_size"]) == (20, 10, 300)
            and s["gamma"] == pytest.approx(0.5 ** 0.1))
    assert rk.saver_kwargs(r) == {"every_steps": 0, "every_s": 600.0}
    assert [rk.epoch_kwargs(r, epoch=e)["ema_in_warmup"] for e in (0, 1)] == [True, False]
    assert rk.run_dir_kwargs(r.replace(run_name="", recipe_name="torchvision-v2"))["name"] == "torchvision-v2"
    assert rk.model_build_kwargs(r, num_classes=3, native_size=64)["small_input"]
    assert not rk.model_build_kwargs(r, num_classes=3, native_size=65)["small_input"]


def test_ema_horizon_is_a_fraction_of_the_run_s_updates():
    """Issue 9.2: --model-ema-horizon F: decay = 1 - 1/(F x updates), updates = epochs x steps // ema_steps;
    unset, the reference's formula (independent of the data set's size)."""
    r = make_recipe(model_ema=True, epochs=4, batch_size=128, model_ema_steps=4, model_ema_horizon=0.1)
    updates = 4 * 50 // 4  # 50 steps an epoch
    assert rk.ema_kwargs(r, steps_per_epoch=50)["decay"] == pytest.approx(1 - 1 / (0.1 * updates))
    ref = r.replace(model_ema_horizon=None)
    assert rk.ema_kwargs(ref, steps_per_epoch=50)["decay"] == pytest.approx(1 - (1 - 0.99998) * 128 * 4 / 4)
    assert rk.ema_kwargs(ref, steps_per_epoch=50) == rk.ema_kwargs(ref, steps_per_epoch=5000)
    assert rk.ema_kwargs(r.replace(model_ema_horizon=1.0), steps_per_epoch=1)["decay"] == 0.0  # 1 update


def test_linter_warns_on_a_batch_larger_than_the_data_and_short_epochs():
    r = make_recipe(batch_size=128)
    w = rk.run_warnings(r, 1, train_images=72)
    assert any("global batch (128) is larger than the training set (72 images)" in x for x in w)
    assert any("an epoch is only 4 steps" in x for x in rk.run_warnings(r, 4, train_images=500))
    assert not any("steps" in x or "batch" in x for x in rk.run_warnings(r, 10, train_images=1280))
    ema = make_recipe(model_ema=True, batch_size=128, epochs=2)
    assert any("the EMA is never updated" in x for x in rk.run_warnings(ema, 1, train_images=72))


def test_linter_warns_on_a_run_too_short_to_learn_and_says_how_many_epochs_give_100_steps():
    short = rk.run_warnings(make_recipe(batch_size=8, epochs=2), 9, train_images=72)
    assert ("the whole run is only 18 optimizer steps (2 epochs x 9): too few for a model trained from "
            "scratch to learn much; --epochs 12 gives 108") in short
    assert not any("whole run" in x for x in rk.run_warnings(make_recipe(batch_size=8, epochs=6), 9, 72))
    tuned = make_recipe(batch_size=8, epochs=2, weights="w.pt")  # fine-tuning: a few steps can be enough
    assert not any("whole run" in x for x in rk.run_warnings(tuned, 9, train_images=72))
