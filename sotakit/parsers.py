"""What the `sotakit` command line accepts: one ``add_<name>_parser`` per subcommand.

``commands`` maps each subcommand (``"runs_compare"`` for ``runs compare``) to the function that
runs it (``cli.COMMANDS``), so this module holds the grammar and cli.py what each command does.
"""

from __future__ import annotations

import argparse
from typing import Callable

from ._version import __version__
from .recipes import list_ladders
from .recipes.flags import add_recipe_arguments

# Recipe fields ablate and sweep set themselves (per step or run) or take as their own flags.
EXPERIMENT_FIELDS = ("data", "epochs", "kfold", "fold", "seed", "output_dir", "run_name", "resume",
                     "test_only")

EXIT_CODES = """exit codes:
  0    done
  1    a failure the message explains (checkpoint write, data loading, DDP peer, failed ablate/sweep runs)
  2    the command line, a recipe, a path or the weights are wrong (the message says what to use),
       or a resume was refused
  3    the loss became NaN/inf (more than --max-nonfinite-skips steps in a row)
  4    predict: some inputs were skipped (unreadable or unsupported; listed with the reason)
  130  stopped by Ctrl-C; 143 by SIGTERM/SIGUSR1/SIGHUP (a checkpoint was written: --resume RUN_DIR)"""


def _sub(sub, name: str, *, help: str, example: str, **kw) -> argparse.ArgumentParser:
    """A subcommand whose help ends with an example (argparse keeps the epilog's line breaks)."""
    return sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".",
                          epilog=f"example:\n{example}", formatter_class=argparse.RawDescriptionHelpFormatter,
                          **kw)


def _experiment_flags(p: argparse.ArgumentParser, *, what: str) -> None:
    """The flags ablate and sweep share."""
    p.add_argument("--data", default="fashion-mnist",
                   help="data set name or folder every run trains on (default: fashion-mnist)")
    p.add_argument("--seeds", type=int, default=3, help=f"seeds (0..N-1) of every {what} (default: 3)")
    p.add_argument("--jobs", type=int, default=1,
                   help="trainings at once (cores divided between them; default: 1)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help=f"override a recipe key in every {what}")
    p.add_argument("--kfold", type=int, default=0, metavar="K", help="run every configuration on K "
                   "stratified folds of the training set (fold = validation)")
    p.add_argument("--dry-run", action="store_true",
                   help="write and list the recipe files, count runs, estimate time")
    p.add_argument("--no-estimate", action="store_true",
                   help="with --dry-run: skip the measured time estimate")


def add_train_parser(sub, commands) -> argparse.ArgumentParser:
    t = _sub(sub, "train", help="train a model from a recipe", allow_abbrev=False,
             example="  sotakit train --recipe fashion-mnist-demo --epochs 2 --train-limit 2000\n"
                     "  sotakit train --data photos --model resnet18 --epochs 5 -b 16")
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
    f = t.add_argument_group("model families (--model PATTERN or A,B: each match with the same recipe)")
    f.add_argument("--seeds", type=int, help="seeds 0..N-1 of every model, one run each (default 1 with a "
                   "pattern; with one --model, that model over N seeds)")
    f.add_argument("--jobs", type=int, default=1, help="trainings at once (cores divided between them)")
    f.add_argument("--out", help="family folder (default: families/<pattern>-<data>-<hash>; a re-run "
                   "resumes)")
    f.add_argument("--no-estimate", action="store_true", help="skip the measured time estimate")
    add_recipe_arguments(t)
    t.set_defaults(func=commands["train"])
    return t


def add_eval_parser(sub, commands) -> None:
    e = _sub(sub, "eval", help="evaluate a run directory, checkpoint or weights file",
             example="  sotakit eval runs/20250101-120000-resnet18 --json")
    e.add_argument("path", metavar="RUN_DIR|CHECKPOINT|WEIGHTS",
                   help="run directory, checkpoint or .safetensors weights file to evaluate")
    e.add_argument("--data", help="data set name or folder to evaluate on (default: the run's own)")
    e.add_argument("--data-root", help="where named data sets are looked up (default: the run's, or "
                   "$SOTAKIT_DATA)")
    e.add_argument("-b", "--batch-size", type=int, help="images per evaluation batch (default: the run's)")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.add_argument("--tta", nargs="?", const="4", metavar="N|flip", help="also test-time augmentation, "
                   "reported apart as test_tta: N passes with the training transforms blended with the plain "
                   "view (fastai's; N defaults to 4), or 'flip' (plain + horizontal flip)")
    e.add_argument("--tta-beta", type=float,
                   help="weight of the plain view in the N-pass blend (default: the recipe's, 0.25)")
    e.set_defaults(func=commands["eval"])


def add_recipes_parser(sub, commands) -> None:
    r = _sub(sub, "recipes", help="list presets, or show one resolved for a data set",
             example="  sotakit recipes\n  sotakit recipes show torchvision-v2 --data fashion-mnist")
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
    m = _sub(sub, "models", help="list models with parameters and FLOPs",
             example="  sotakit models 'resnet*' --data fashion-mnist")
    m.add_argument("pattern", nargs="?", metavar="PATTERN",
                   help="fnmatch on model names, quoted ('vit*'; default: all)")
    m.add_argument("--data", help="count at this data set's image size, and show which models cannot run "
                   "there (default: 224 px)")
    m.add_argument("--num-classes", type=int, default=10, help="classes of the classifier head (default: 10)")
    m.add_argument("--published", action="store_true", help="add the ImageNet top-1 of the RegNet paper and "
                   "of the Keras reproduction, with the settings it changed ('Training RegNets for "
                   "tf.keras.applications')")
    m.set_defaults(func=commands["models"])


def add_ablate_parser(sub, commands) -> None:
    a = _sub(sub, "ablate", help="the stacked-improvements ladder over several seeds, as the blog's table",
             example="  sotakit ablate --data fashion-mnist --epochs 2 --seeds 2 --dry-run\n"
                     "  sotakit ablate --data photos --model resnet18 -b 16 --epochs 3")
    ladders = list_ladders()
    a.add_argument("--ladder", default="torchvision", metavar="{" + ",".join(ladders) + "}",
                   help="the ladder of steps to run (default: torchvision)")
    a.add_argument("--epochs", type=int, default=5, help="short-cycle epochs of every step (default: 5)")
    a.add_argument("--long-factor", type=float, default=600 / 90,
                   help="epoch multiplier from the long-training step on (default: 600/90)")
    a.add_argument("--out", help="ablation directory (default: ablations/<ladder>-<data>-e<epochs>-<hash>)")
    _experiment_flags(a, what="step")
    add_recipe_arguments(a, skip=EXPERIMENT_FIELDS, title="recipe options set in every step (after the "
                         "step's own changes, as --set)")
    a.set_defaults(func=commands["ablate"])


def add_runs_parser(sub, commands) -> None:
    r = _sub(sub, "runs", help="list runs as a table; `runs compare A B` diffs two runs",
             example="  sotakit runs '*resnet*'\n  sotakit runs compare RUN_A RUN_B")
    r.add_argument("--root", help="runs folder or ablation directory (default: ./runs)")
    r.set_defaults(func=commands["runs"], pattern=[])
    actions = r.add_subparsers(dest="action", metavar="{list,compare}")
    ls = actions.add_parser("list", help="list runs (the default: `sotakit runs [PATTERN]`)")
    ls.add_argument("pattern", nargs="*", metavar="PATTERN",
                    help="fnmatch on run names, with or without the time prefix (quote it: '*resnet*')")
    c = actions.add_parser("compare", help="the recipe fields and metrics in which two runs differ")
    c.add_argument("run_a", metavar="RUN_A", help="run directory, or a run's name under --root")
    c.add_argument("run_b", metavar="RUN_B", help="the run to compare RUN_A with")
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
    h = _sub(sub, "report", help="one self-contained HTML report of a run or an ablation",
             example="  sotakit report runs/20250101-120000-resnet18")
    h.add_argument("path", metavar="RUN_DIR|ABLATION_DIR", help="a run, ablation or sweep directory")
    h.add_argument("-o", "--output", help="HTML file (default: PATH/report.html)")
    h.add_argument("--samples", type=int, default=16,
                   help="augmented training images in the grid (default: 16)")
    h.set_defaults(func=commands["report"])


def add_sweep_parser(sub, commands) -> None:
    w = _sub(sub, "sweep", help="a grid of recipe knobs over several seeds: sorted table and plot",
             example="  sotakit sweep --recipe fashion-mnist-demo --grid lr=0.05,0.1,0.2 --epochs 2 "
                     "--seeds 2\n  sotakit sweep --recipe fashion-mnist-demo --grid label_smoothing=0,0.1 "
                     "--model resnet18 -b 16")
    w.add_argument("--recipe", required=True, help="preset name or recipe TOML file the grid starts from")
    w.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,...",
                   help="a recipe key and its values; repeat for more knobs (cartesian product)")
    w.add_argument("--epochs", type=int,
                   help="epochs of every run (warm-up and StepLR step keep their share; default: the "
                        "recipe's)")
    w.add_argument("--out", help="sweep directory (default: sweeps/<recipe>-<data>-<hash>)")
    _experiment_flags(w, what="point")
    add_recipe_arguments(w, skip=EXPERIMENT_FIELDS, title="recipe options set in every grid point (as --set)")
    w.set_defaults(func=commands["sweep"])


def add_tune_resize_parser(sub, commands) -> None:
    z = _sub(sub, "tune-resize",
             help="choose a run's eval resize on half of its validation data, confirm on the other",
             example="  sotakit tune-resize runs/20250101-120000-resnet18 --sizes 224:288:16")
    z.add_argument("run_dir", metavar="RUN_DIR", help="the finished run whose eval resize is tuned")
    z.add_argument("--sizes", metavar="A:B:STEP", help="resize sizes, B included (default 224:256:8 for a "
                   "224 crop, the same relative range for others)")
    z.add_argument("--seed", type=int, default=0,
                   help="seed of the stratified half split (default: 0)")
    z.set_defaults(func=commands["tune_resize"])


def add_lr_find_parser(sub, commands) -> None:
    f = _sub(sub, "lr-find", help="fastai's learning-rate range test on a recipe's model and data; writes "
             "lr_find.png and lr_find.json and prints the suggestions (valley first)",
             example="  sotakit lr-find --recipe fashion-mnist-demo --train-limit 5000 -o lr_find")
    f.add_argument("--recipe", help="preset name (see `sotakit recipes`)")
    f.add_argument("--config", help="recipe TOML file")
    f.add_argument("--start", type=float, default=1e-7, help="first learning rate (default: 1e-7)")
    f.add_argument("--end", type=float, default=10.0, help="learning rate the ramp heads for (default: 10)")
    f.add_argument("--steps", type=int, default=100, help="batches of the ramp (default: 100)")
    f.add_argument("-o", "--out", default="lr_find", help="folder for lr_find.png and lr_find.json "
                   "(default: ./lr_find)")
    add_recipe_arguments(f)
    f.set_defaults(func=commands["lr_find"])


def _positive(kind):
    """An argparse type: a number above 0, with the flag's rule in the error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {'whole number' if kind is int else 'number'}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be above 0")
        return value
    return parse


def add_bench_parser(sub, commands) -> None:
    b = _sub(sub, "bench", help="where a recipe's training time goes on this machine: the compute ceiling (a "
             "plain loop), the data pipeline alone and the full step, their ratios and which one limits",
             example="  sotakit bench --recipe fashion-mnist-demo\n"
                     "  sotakit bench --recipe torchvision-v2 --data photos --model resnet18 --seconds 30")
    b.add_argument("--recipe", help="preset name (see `sotakit recipes`)")
    b.add_argument("--config", help="recipe TOML file")
    b.add_argument("--seconds", type=_positive(float), default=5.0,
                   help="timed work in seconds, shared by the three stages (default: 5; longer is steadier)")
    b.add_argument("--blocks", type=_positive(int), default=3,
                   help="interleaved timed blocks per stage; the medians are over them (default: 3)")
    add_recipe_arguments(b)
    b.set_defaults(func=commands["bench"])


def add_interpret_parser(sub, commands) -> None:
    i = _sub(sub, "interpret", help="what a run gets wrong: confusion matrix, most confused class pairs and "
             "the test images with the highest loss (fastai's ClassificationInterpretation)",
             example="  sotakit interpret runs/20250101-120000-resnet18 --top 16")
    i.add_argument("run_dir", metavar="RUN_DIR", help="the run whose last checkpoint is interpreted")
    i.add_argument("-o", "--out", help="folder for confusion.png, top_losses.png, interpret.json (default: "
                   "RUN_DIR)")
    i.add_argument("--top", type=int, default=9, help="top-loss images in the grid (default: 9)")
    i.set_defaults(func=commands["interpret"])


def add_data_parser(sub, commands) -> None:
    d = _sub(sub, "data", help="look at a data set: colour statistics, or a grid of augmented training "
             "samples", example="  sotakit data stats --data fashion-mnist\n  sotakit data show --recipe "
                                "fastai-imagenette --data imagenette-160 -o grid.png")
    actions = d.add_subparsers(dest="action", metavar="{stats,show}", required=True)
    s = actions.add_parser("stats", help="per-channel mean and std and the RGB covariance's eigenvalues and "
                           "eigenvectors of the training split, cached by the data fingerprint")
    s.add_argument("--data", required=True, help="data set name or folder")
    s.add_argument("--data-root", help="where named data sets are looked up (default: $SOTAKIT_DATA)")
    s.add_argument("--refresh", action="store_true", help="compute again instead of reading the cache")
    s.add_argument("--json", action="store_true", help="print the statistics as JSON")
    s.set_defaults(func=commands["data_stats"])
    w = actions.add_parser("show", help="a grid of augmented training samples with their (mixed) labels, "
                           "as the recipe's first batch")
    w.add_argument("--recipe", help="preset name (see `sotakit recipes`)")
    w.add_argument("--config", help="recipe TOML file")
    w.add_argument("-o", "--out", default="grid.png", help="PNG file (default: grid.png)")
    w.add_argument("--count", type=int, default=16, help="images in the grid (default: 16)")
    add_recipe_arguments(w)
    w.set_defaults(func=commands["data_show"])
def add_export_weights_parser(sub, commands) -> None:
    x = _sub(sub, "export-weights", help="write a run's weights file (safetensors with its meta)",
             example="  sotakit export-weights runs/20250101-120000-resnet18 -o fmnist.safetensors")
    x.add_argument("run_dir", metavar="RUN_DIR", help="the run whose newest checkpoint is exported")
    which = x.add_mutually_exclusive_group()
    which.add_argument("--ema", action="store_true", help="the EMA model (default: the better one on the "
                       "holdout split; without a holdout the final plain model)")
    which.add_argument("--plain", action="store_true", help="the plain (non-EMA) model")
    x.add_argument("-o", "--output", metavar="NAME.safetensors",
                   help="file to write (default: RUN_DIR/weights.safetensors)")
    x.set_defaults(func=commands["export_weights"])


def add_weights_parser(sub, commands) -> None:
    w = _sub(sub, "weights", help="the local registry of named weights (list, add, remove)",
             example="  sotakit weights add fmnist-v2 runs/20250101-120000-resnet18/weights.safetensors\n"
                     "  sotakit weights list")
    w.set_defaults(func=commands["weights_list"])
    actions = w.add_subparsers(dest="action", metavar="{list,add,remove}")
    ls = actions.add_parser("list", help="list the registered weights")
    ls.set_defaults(func=commands["weights_list"])
    a = actions.add_parser("add", help="copy a weights file into the registry under NAME")
    a.add_argument("name", metavar="NAME", help="the name build_model(..., weights=NAME) and predict take")
    a.add_argument("file", metavar="FILE", help="a weights file, or a run directory (its weights file)")
    a.set_defaults(func=commands["weights_add"])
    r = actions.add_parser("remove", help="delete the weights registered under NAME")
    r.add_argument("name", metavar="NAME", help="a name `sotakit weights list` shows")
    r.set_defaults(func=commands["weights_remove"])


def add_predict_parser(sub, commands) -> None:
    p = _sub(sub, "predict", help="top-k classes of images, folders or glob patterns",
             example="  sotakit predict runs/20250101-120000-resnet18 photos/ --topk 3\n"
                     "  sotakit predict fmnist-v2 'shots/*.png' --format csv -o predictions.csv")
    p.add_argument("weights", metavar="WEIGHTS|RUN",
                   help="a weights file, a run directory or a registered name")
    p.add_argument("images", nargs="+", metavar="IMAGE|FOLDER|GLOB", help="files, folders (recursive) or "
                   "quoted glob patterns")
    p.add_argument("--topk", type=int, default=5, help="classes per image (default: 5)")
    p.add_argument("--tta", action="store_true", help="average the image's and its mirror's probabilities")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="output (default: table)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the output to FILE instead of stdout")
    p.add_argument("-b", "--batch-size", type=int, default=32, help="images per batch (default: 32)")
    p.set_defaults(func=commands["predict"])


def add_calibrate_parser(sub, commands) -> None:
    c = _sub(sub, "calibrate", help="fit a softmax temperature on a run's holdout split (never on test)",
             example="  sotakit calibrate runs/20250101-120000-resnet18")
    c.add_argument("run_dir", metavar="RUN_DIR", help="a run trained with --holdout")
    c.set_defaults(func=commands["calibrate"])


def add_export_parser(sub, commands) -> None:
    e = _sub(sub, "export", help="export a model to ONNX or a PT2 program, checked against PyTorch",
             example="  sotakit export runs/20250101-120000-resnet18 --format onnx -o model.onnx")
    e.add_argument("weights", metavar="WEIGHTS|RUN",
                   help="a weights file, a run directory or a registered name")
    e.add_argument("--format", choices=("onnx", "pt2"), required=True,
                   help="onnx (needs pip install 'sotakit[export]') or pt2 (torch.export)")
    e.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    e.set_defaults(func=commands["export"])


LOG_FLAGS = ("-q", "--quiet", "-v", "--verbose")


def add_log_flags(p: argparse.ArgumentParser) -> None:
    """-q/-v: global options (`sotakit -q train ...`; cli.main also moves them from after the subcommand)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true",
                   help="results only: no notes, progress or step lines (errors still go to stderr)")
    g.add_argument("-v", "--verbose", action="store_true", help="also debug messages on stderr")


def with_log_flags_first(argv: list[str]) -> list[str]:
    """-q/-v typed after the subcommand (`sotakit train -q ...`) moved in front, where the root parser reads
    them; nothing after a `--` is touched."""
    end = argv.index("--") if "--" in argv else len(argv)
    flags = [a for a in argv[:end] if a in LOG_FLAGS]
    return flags + [a for a in argv[:end] if a not in LOG_FLAGS] + argv[end:]


def subcommand(root: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` (check_unknown compares typed options with its flags)."""
    sub = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def make_parser(commands: dict[str, Callable]) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The root parser and the `train` parser (whose flags check_unknown compares typed options with)."""
    p = argparse.ArgumentParser(prog="sotakit", description="Train state-of-the-art image classifiers.",
                                epilog="example:\n  sotakit train --recipe fashion-mnist-demo --epochs 2\n\n"
                                       + EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"sotakit {__version__}")
    add_log_flags(p)
    sub = p.add_subparsers(dest="command", required=True)
    train = add_train_parser(sub, commands)
    for add in (add_eval_parser, add_recipes_parser, add_models_parser, add_ablate_parser, add_runs_parser,
                add_report_parser, add_sweep_parser, add_tune_resize_parser, add_lr_find_parser,
                add_data_parser, add_bench_parser, add_interpret_parser, add_export_weights_parser,
                add_weights_parser, add_predict_parser, add_calibrate_parser, add_export_parser):
        add(sub, commands)
    return p, train
