"""Issue 9 point 8: hints for other trainers' flags and keys, help on every argument, warnings only about
options the user chose."""

from __future__ import annotations

import argparse

import pytest

from sotakit import cli
from sotakit.recipes import RecipeError, load_preset, load_recipe, make_recipe, warnings_for
from sotakit.recipes.flags import SYNONYMS, known_flags


def _train_error(capsys, *argv) -> str:
    assert cli.main(["train", *argv]) == 2
    return capsys.readouterr().err.strip()


@pytest.mark.parametrize("typed, hint", [
    ("--lr-warm", "Did you mean '--lr-warmup-epochs'?"),
    ("--model-ema-force-cpu", "Did you mean '--model-ema'?"),
    ("--log-interval", "Did you mean '--print-freq'?"),
    ("--output", "Did you mean '--output-dir'?"),
    ("--experiment", "Did you mean '--run-name'?"),
    ("--initial-checkpoint", "Did you mean '--weights'?"),
    ("--aug-repeats", "Did you mean '--ra-reps' (with --ra-sampler)?"),
    ("--img-size", "Did you mean '--train-crop-size' (and --val-crop-size, --val-resize-size)?"),
    ("--input-size", "Did you mean '--train-crop-size' (one square side; also --val-crop-size)?"),
    ("--log-wandb", "Did you mean '--tracker wandb'?"),
    ("--pretrained", "sotakit has no --pretrained (no hub downloads); start from a file with --weights "
                     "FILE."),
    ("--torchcompile", "Did you mean '--compile'?"),
    ("--grad-accum-steps", "sotakit has no gradient accumulation; use a smaller -b with --lr-ref-batch (the "
                           "lr then scales with the batch)."),
])
def test_other_trainers_flags_get_the_sotakit_flag(capsys, typed, hint):
    want = f"error: unknown option {typed}. {hint} See `sotakit train --help`."
    assert _train_error(capsys, typed, "1") == want


def test_no_real_flag_is_a_synonym():
    _, train = cli.make_parser()
    assert not set(SYNONYMS) & set(known_flags(train))  # --channels-last is itself


def test_ablate_and_sweep_take_the_recipe_flags_and_hint_typos(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["ablate", "--dry-run", "--no-estimate", "--epochs", "7", "--model", "resnet18",
                     "-b", "16"]) == 0
    step = next(tmp_path.glob("ablations/*/steps/*.toml"))
    recipe = load_recipe(step)
    assert (recipe.model, recipe.batch_size) == ("resnet18", 16)
    assert cli.main(["sweep", "--recipe", "fashion-mnist-demo", "--grid", "lr=0.1,0.2", "--dry-run",
                     "--no-estimate", "-b", "8"]) == 0
    points = list(tmp_path.glob("sweeps/**/*.toml"))
    assert points and all(load_recipe(p).batch_size == 8 for p in points)
    capsys.readouterr()
    assert cli.main(["sweep", "--recipe", "x", "--grid", "lr=1", "--lr-warm", "1"]) == 2
    assert capsys.readouterr().err.strip() == ("error: unknown option --lr-warm. Did you mean "
                                               "'--lr-warmup-epochs'? See `sotakit sweep --help`.")


def test_learning_rate_key_hints_lr(tmp_path):
    with pytest.raises(RecipeError, match=r"^unknown recipe key 'learning_rate'. Did you mean 'lr'\?$"):
        make_recipe(learning_rate=0.1)
    path = tmp_path / "r.toml"
    path.write_text("[recipe]\nlearning_rate = 0.1\n")
    with pytest.raises(RecipeError, match=r"unknown key 'learning_rate'. Did you mean 'lr'\?$"):
        load_recipe(path)


def test_a_config_without_recipe_table_says_so(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("[train]\nlr = 0.1\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert str(e.value) == f"{path} has no [recipe] table (found [train]): put the recipe keys under [recipe]"


def test_no_warning_about_a_preset_value_the_user_did_not_type():
    r = make_recipe(load_preset("fashion-mnist-demo"), lr_warmup_epochs=0)  # the preset's method is linear
    assert not any("lr-warmup-method" in w for w in warnings_for(r))
    typed = make_recipe(r, lr_warmup_method="linear")
    note = "--lr-warmup-method has no effect with --lr-warmup-epochs 0"
    assert note in warnings_for(typed, {"lr_warmup_method"})
    assert note in warnings_for(make_recipe(lr_warmup_method="linear"))  # no preset: all fields are chosen


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == "sotakit 0.1.0\n"


def _parsers(parser, path=()):
    yield path, parser
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, p in a.choices.items():
                yield from _parsers(p, (*path, name))


def test_every_argument_has_help_and_every_command_an_example():
    root, _ = cli.make_parser()
    for path, p in _parsers(root):
        for a in p._actions:
            if not isinstance(a, argparse._SubParsersAction) and a.help is not argparse.SUPPRESS:
                assert a.help, (path, a.dest)
        if len(path) == 1:
            assert "example:\n  sotakit" in p.format_help(), path
    assert "exit codes:" in root.format_help() and "143" in root.format_help()


def test_help_lists_choices_and_the_right_default():
    _, train = cli.make_parser()
    text = train.format_help()
    assert "--opt {sgd,sgd-nesterov,rmsprop,adamw}" in text
    assert "--lr-scheduler {steplr,cosineannealinglr,exponentiallr,onecycle,flatcos}" in text
    assert "--auto-augment {ta_wide,ra,augmix,imagenet,cifar10,svhn}" in text
    helps = {a.dest: a.help for a in train._actions}
    assert helps["lr"].endswith("(reference default: 0.1)")
    assert helps["seed"].endswith("(default: 0)")  # sotakit's own field: no "reference"
    root, _ = cli.make_parser()
    ablate = next(p for path, p in _parsers(root) if path == ("ablate",))
    assert "--ladder {fastai-ch7,nn-tools,torchvision}" in ablate.format_help()
