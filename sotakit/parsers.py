"""What the `sotakit` command line accepts: one ``add_<name>_parser`` per subcommand.

``commands`` maps each subcommand (``"runs_compare"`` for ``runs compare``) to the function that
runs it (``cli.COMMANDS``), so this module holds the grammar and cli.py what each command does.
"""

from __future__ import annotations

import argparse
from typing import Callable

from .recipes.flags import add_recipe_arguments


def _experiment_flags(p: argparse.ArgumentParser, *, what: str) -> None:
    """The flags ablate and sweep share."""
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=1, help="trainings at once (cores divided between them)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help=f"override a recipe key in every {what}")
    p.add_argument("--kfold", type=int, default=0, metavar="K", help="run every configuration on K "
                   "stratified folds of the training set (fold = validation)")
    p.add_argument("--dry-run", action="store_true",
                   help="write and list the recipe files, count runs, estimate time")
    p.add_argument("--no-estimate", action="store_true",
                   help="with --dry-run: skip the measured time estimate")


def add_train_parser(sub, commands) -> argparse.ArgumentParser:
    t = sub.add_parser("train", help="train a model from a recipe", allow_abbrev=False)
    t.add_argument("--recipe", help="preset name (see `sotakit recipes`)")
    t.add_argument("--config", help="recipe TOML file")
    t.add_argument("--dry-run", action="store_true", help="print the recipe and exit")
    t.add_argument("--force-resume", action="store_true",
                   help="with --resume: continue although the model, classes, recipe or data changed (same "
                        "model and classes: all state is loaded; otherwise only the weights whose name and "
                        "shape match)")
    t.add_argument("--tracker", choices=("mlflow", "wandb"),
                   help="also log the recipe and metrics to MLflow or W&B (offline)")
    t.add_argument("--run-dir-file", metavar="FILE", help="when the run has finished, write its directory "
                   "to FILE (for scripts; the ablate and sweep runner reads it)")
    add_recipe_arguments(t)
    t.set_defaults(func=commands["train"])
    return t


def add_eval_parser(sub, commands) -> None:
    e = sub.add_parser("eval", help="evaluate a run directory or checkpoint")
    e.add_argument("path")
    e.add_argument("--data")
    e.add_argument("--data-root")
    e.add_argument("-b", "--batch-size", type=int)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=commands["eval"])


def add_recipes_parser(sub, commands) -> None:
    r = sub.add_parser("recipes", help="list presets, or show one resolved for a data set")
    r.add_argument("--data", help=argparse.SUPPRESS)  # the older `recipes --data D show NAME`
    r.set_defaults(func=commands["recipes_list"])  # `sotakit recipes` alone lists
    actions = r.add_subparsers(dest="action", metavar="{list,show}")
    ls = actions.add_parser("list", help="list the presets with their titles")
    ls.set_defaults(func=commands["recipes_list"])
    s = actions.add_parser("show", help="print a preset as a recipe file, resolved for --data if given")
    s.add_argument("name", metavar="NAME", help="preset name (see `sotakit recipes list`)")
    s.add_argument("--data", default=argparse.SUPPRESS,  # SUPPRESS: keeps a --data given before `show`
                   help="resolve for this data set (image size) and this machine (device, cores)")
    s.set_defaults(func=commands["recipes_show"])


def add_models_parser(sub, commands) -> None:
    m = sub.add_parser("models", help="list models with parameters and FLOPs")
    m.add_argument("pattern", nargs="?")
    m.add_argument("--data")
    m.add_argument("--num-classes", type=int, default=10)
    m.set_defaults(func=commands["models"])


def add_ablate_parser(sub, commands) -> None:
    a = sub.add_parser("ablate",
                       help="the stacked-improvements ladder over several seeds, as the blog's table")
    a.add_argument("--ladder", default="torchvision")
    a.add_argument("--epochs", type=int, default=5, help="short-cycle epochs of every step")
    a.add_argument("--long-factor", type=float, default=600 / 90,
                   help="epoch multiplier from the long-training step on")
    a.add_argument("--out", help="ablation directory (default: ablations/<ladder>-<data>-e<epochs>-<hash>)")
    _experiment_flags(a, what="step")
    a.set_defaults(func=commands["ablate"])


def add_runs_parser(sub, commands) -> None:
    r = sub.add_parser("runs", help="list runs as a table; `runs compare A B` diffs two runs")
    r.add_argument("--root", help="runs folder or ablation directory (default: ./runs)")
    r.set_defaults(func=commands["runs"], pattern=[])
    actions = r.add_subparsers(dest="action", metavar="{list,compare}")
    ls = actions.add_parser("list", help="list runs (the default: `sotakit runs [PATTERN]`)")
    ls.add_argument("pattern", nargs="*", metavar="PATTERN",
                    help="fnmatch on run names, with or without the time prefix (quote it: '*resnet*')")
    c = actions.add_parser("compare", help="the recipe fields and metrics in which two runs differ")
    c.add_argument("run_a", metavar="RUN_A", help="run directory, or a run's name under --root")
    c.add_argument("run_b", metavar="RUN_B")
    c.set_defaults(func=commands["runs_compare"])
    for p in (ls, c):  # SUPPRESS: a --root given before the action is kept
        p.add_argument("--root", default=argparse.SUPPRESS, help="runs folder or ablation directory")


def with_default_runs_action(argv: list[str]) -> list[str]:
    """`sotakit runs [PATTERN]` as `sotakit runs list [PATTERN]`: argparse has no optional PATTERN beside
    sub-subcommands, so `list` goes in when the first word after `runs` (options skipped) is no action.
    A PATTERN spelled like an action is the action (`runs compare` compares, and says it needs two
    runs); runs named "compare" or "list" are listed with `sotakit runs list compare`."""
    if argv[:1] != ["runs"]:
        return argv
    i = 1
    while i < len(argv) and argv[i].startswith("-") and argv[i] not in ("-h", "--help"):
        i += 2 if argv[i] == "--root" else 1
    first = argv[i] if i < len(argv) else None  # -h: the help of `runs` itself, which names the actions
    return argv if first in ("list", "compare", "-h", "--help") else ["runs", "list", *argv[1:]]


def add_report_parser(sub, commands) -> None:
    h = sub.add_parser("report", help="one self-contained HTML report of a run or an ablation")
    h.add_argument("path", metavar="RUN_DIR|ABLATION_DIR")
    h.add_argument("-o", "--output", help="HTML file (default: PATH/report.html)")
    h.add_argument("--samples", type=int, default=16, help="augmented training images in the grid")
    h.set_defaults(func=commands["report"])


def add_sweep_parser(sub, commands) -> None:
    w = sub.add_parser("sweep", help="a grid of recipe knobs over several seeds: sorted table and plot")
    w.add_argument("--recipe", required=True, help="preset name or recipe TOML file the grid starts from")
    w.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,...",
                   help="a recipe key and its values; repeat for more knobs (cartesian product)")
    w.add_argument("--epochs", type=int,
                   help="epochs of every run (warm-up and StepLR step keep their share)")
    w.add_argument("--out", help="sweep directory (default: sweeps/<recipe>-<data>-<hash>)")
    _experiment_flags(w, what="point")
    w.set_defaults(func=commands["sweep"])


def add_tune_resize_parser(sub, commands) -> None:
    z = sub.add_parser("tune-resize",
                       help="choose a run's eval resize on half of its validation data, confirm on the other")
    z.add_argument("run_dir")
    z.add_argument("--sizes", metavar="A:B:STEP", help="resize sizes, B included (default 224:256:8 for a "
                   "224 crop, the same relative range for others)")
    z.add_argument("--seed", type=int, default=0, help="seed of the stratified half split")
    z.set_defaults(func=commands["tune_resize"])


def make_parser(commands: dict[str, Callable]) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The root parser and the `train` parser (whose flags check_unknown compares typed options with)."""
    p = argparse.ArgumentParser(prog="sotakit", description="Train state-of-the-art image classifiers.")
    sub = p.add_subparsers(dest="command", required=True)
    train = add_train_parser(sub, commands)
    for add in (add_eval_parser, add_recipes_parser, add_models_parser, add_ablate_parser, add_runs_parser,
                add_report_parser, add_sweep_parser, add_tune_resize_parser):
        add(sub, commands)
    return p, train
