"""The `sotakit` command: parsing and dispatch only. One ``add_<name>_parser`` per subcommand; its
``cmd_<name>`` builds the inputs, calls one function below and prints what console.py renders."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from functools import partial
from pathlib import Path

from . import console
from .experiments.runner import ExperimentInterrupted, out_dir_for
from .parsers import (
    EXPERIMENT_FIELDS,
    LOG_FLAGS,
    subcommand,
    with_default_runs_action,
    with_log_flags_first,
)
from .parsers import make_parser as build_parsers
from .recipes import (
    Recipe,
    RecipeError,
    list_presets,
    load_preset,
    load_recipe,
    make_recipe,
    preset_meta,
    recipe_for_data,
)
from .recipes.flags import check_unknown, overrides_from

log = logging.getLogger("sotakit")


def note(message: str) -> None:
    """A note for the user: stderr (through the handler main() attaches), silent with -q."""
    log.info(f"note: {message}")


def build_recipe(args: argparse.Namespace, *, say=None) -> Recipe:
    """Preset (or reference defaults), then --config file, then the flags the user typed.

    ``--data FOLDER`` is stored as an absolute path (so `sotakit eval RUN` works from anywhere) and
    fills the reference's ``data_path``; without --recipe and --config it picks a preset for the
    folder's size and image size (recipes.recipe_for_data) and ``say`` is told which.
    """
    overrides = overrides_from(args)
    if "data_path" in overrides and "data" not in overrides:
        overrides["data"] = overrides["data_path"]  # the reference's --data-path means --data PATH
    data = overrides.get("data")
    if data is not None and Path(data).is_dir():
        overrides["data"] = str(Path(data).resolve())
    if "data" in overrides and "data_path" not in overrides:
        overrides["data_path"] = overrides["data"]  # not the reference's ImageNet path
    if args.recipe:
        base = load_preset(args.recipe)
    elif not args.config and data is not None and Path(data).is_dir():
        from .data.datasets import count_train_images, peek_native_size
        folder = overrides["data"]
        base, why = recipe_for_data(count_train_images(folder), peek_native_size(folder))
        if say:
            say(why)
    else:
        base = Recipe()
    if args.config:
        base = load_recipe(args.config, base)
    if args.recipe and "recipe_name" not in overrides:
        overrides["recipe_name"] = args.recipe
    return make_recipe(base, **overrides)


def resume_run(args: argparse.Namespace) -> dict | None:
    """fit()'s arguments for the run `train --resume RUN_DIR [--epochs N]` continues (with the recipe saved
    in it: recipe flags other than --epochs, which extends the run, are refused); None for a new run, and
    with --test-only, where --resume names what to evaluate."""
    if getattr(args, "test_only", False) or not getattr(args, "resume", None):
        return None
    overrides = overrides_from(args)
    extra = sorted(set(overrides) - {"resume", "epochs"})
    if extra or args.recipe or args.config:
        raise RecipeError(f"--resume continues a run with the recipe saved in it (only --epochs N may "
                          f"change, to extend it); drop {', '.join(extra) or '--recipe/--config'} (or start "
                          "a new run with --weights to begin from its weights)")
    epochs = overrides.get("epochs")  # as typed: a string, like every override before make_recipe
    return {"resume": args.resume, "epochs": int(epochs) if epochs is not None else None}


def _show(*items, wide: bool = False) -> None:
    """Text as it is, rich tables through a Console (``wide``: 200 columns when piped, not 80)."""
    from rich.console import Console
    out = Console() if sys.stdout.isatty() or not wide else Console(width=200)
    for item in items:
        (print if isinstance(item, str) else out.print)(item)


def _run_fit(call):
    """Exit codes: 143 stopped by SIGTERM/SIGUSR1/SIGHUP (checkpoint written), 130 by Ctrl-C, 3 non-finite
    loss, 1 a failure the message explains (checkpoint write, data loading, DDP peer), 2 refused resume."""
    from .train import Interrupted, NonFiniteLossError
    from .train.fit import ResumeMismatchError, RunError
    try:
        return call()
    except Interrupted as e:
        return 128 + (signal.SIGINT if e.signum == signal.SIGINT else signal.SIGTERM)
    except NonFiniteLossError:
        return 3
    except RunError:
        return 1  # the message was shown by fit()
    except ResumeMismatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def cmd_train(args) -> int:
    if args.tracker:  # fail before loading data when the tracker's package is missing
        from .train.trackers import require
        require(args.tracker)
    if resume := resume_run(args):
        return _fit(args, **resume, force_resume=args.force_resume)
    recipe = build_recipe(args, say=note)
    if recipe.test_only:
        return _test_only(recipe)
    if args.dry_run:  # the recipe as the run would use it on this data and machine, with the notes
        from .experiments.preview import resolve_for_data
        resolved, notes = resolve_for_data(recipe, recipe.data, data_root=recipe.data_root)
        meta = preset_meta(recipe.recipe_name) if recipe.recipe_name else {"title": "reference defaults"}
        print(console.preset_text(resolved, meta, data=recipe.data, notes=notes), end="")
        return 0
    if recipe.kfold and "fold" not in overrides_from(args):
        return _train_folds(args, recipe)
    return _fit(args, recipe)


def _fit(args, recipe: Recipe | None = None, **kw) -> int:
    """One fit(); its run directory goes to --run-dir-file (for the experiment runner), then the summary."""
    from .train import fit
    result = _run_fit(lambda: fit(recipe, tracker=args.tracker, verbose=not args.quiet, **kw))
    if isinstance(result, int):
        return result
    if result.run_dir is not None:  # rank 0 only under DDP
        if args.run_dir_file:
            from .train.checkpoint import write_text_atomic
            write_text_atomic(args.run_dir_file, f"{result.run_dir}\n")  # whole or absent, never torn
        print(console.summary_text(result.summary))
    return 0


def _train_folds(args, recipe: Recipe) -> int:
    """`train --kfold K` without --fold: the K fits one after another, then per-fold and mean ± std."""
    from .experiments.kfold import fit_folds
    from .train import fit
    if args.run_dir_file:
        raise RecipeError("--run-dir-file names one run's directory; with --kfold K also give --fold F")
    out = _run_fit(lambda: fit_folds(recipe, fit=partial(fit, verbose=not args.quiet)))
    if isinstance(out, int):
        return out
    print(out[1])
    return 0


def _test_only(recipe: Recipe) -> int:
    """The reference's --test-only: evaluate --resume or --weights and exit."""
    if not (recipe.resume or recipe.weights):
        raise RecipeError("--test-only needs --resume RUN_DIR or --weights FILE to evaluate")
    from .train.evaluate_run import evaluate_checkpoint
    print(console.eval_text(evaluate_checkpoint(recipe.resume or recipe.weights)))
    return 0


def cmd_eval(args) -> int:
    from .train.evaluate_run import evaluate_checkpoint
    out = evaluate_checkpoint(args.path, data=args.data, data_root=args.data_root, batch_size=args.batch_size)
    print(json.dumps(out, indent=2) if args.json else console.eval_text(out))
    return 0


def cmd_recipes_list(args) -> int:
    print(console.presets_text([(name, preset_meta(name)) for name in list_presets()]))
    return 0


def cmd_recipes_show(args) -> int:
    recipe, notes = load_preset(args.name), []
    if args.data:
        from .experiments.preview import resolve_for_data
        recipe, notes = resolve_for_data(recipe, args.data)
    print(console.preset_text(recipe, preset_meta(args.name), data=args.data, notes=notes), end="")
    return 0


def cmd_models(args) -> int:
    from .data.datasets import peek_native_size
    from .models import describe_models
    size = (peek_native_size(args.data) or 224) if args.data else 224
    small = bool(args.data) and size <= 64
    _show(console.models_table(describe_models(args.pattern, image_size=size, num_classes=args.num_classes,
                                               small_input=small), size=size, small=small))
    return 0


def _experiment_overrides(args) -> dict:
    """--data, then the recipe flags typed (`-b 16`), then --set KEY=VALUE, then --kfold: what ablate and
    sweep change in every recipe."""
    from .experiments.sweep import parse_sets
    typed = {k: v for k, v in overrides_from(args).items() if k not in EXPERIMENT_FIELDS}  # --epochs: own
    return {"data": args.data, **typed, **parse_sets(args.set),
            **({"kfold": args.kfold} if args.kfold else {})}


def _plan_and_run(args, entries, out: Path, *, label: str) -> bool:
    """Print the plan; run what is not done yet, or (--dry-run) list the files and estimate the time."""
    from .experiments import count_runs, run_recipes
    from .experiments.runner import runs_to_do
    runs = count_runs(entries, args.seeds)
    print(console.plan_text(entries, runs=runs, seeds=args.seeds, label=label, dry_run=args.dry_run))
    todo = len(runs_to_do(entries, out, seeds=args.seeds))
    if not args.no_estimate and todo:  # also before a real run: how long, before it starts
        from .experiments.estimate import TooFewImagesError, estimate_entries
        try:
            total_s, per_image, startup_s = estimate_entries(entries, seeds=args.seeds, jobs=args.jobs)
            print(console.estimate_text(total_s * todo / runs, per_image, startup_s, jobs=args.jobs,
                                        runs=todo))
        except TooFewImagesError as e:  # the plan stands, without an estimate
            note(f"no time estimate: {e}")
        except Exception as e:  # a config that cannot train fails in its run, with the run's own message
            first = (str(e).splitlines() or [""])[0]
            note(f"no time estimate: timing a run failed ({type(e).__name__}: {first})")
    if not args.dry_run:
        run_recipes(entries, out, seeds=args.seeds, jobs=args.jobs)
    return not args.dry_run


def cmd_ablate(args) -> int:
    from .experiments import expand, write_ladder_tables
    label = f"{args.ladder}-{Path(args.data).name}-e{args.epochs}"
    out = Path(args.out or out_dir_for("ablations", label, [args.set or [], args.long_factor, args.kfold]))
    steps = expand(args.ladder, out, epochs=args.epochs, long_factor=args.long_factor,
                   overrides=_experiment_overrides(args))
    if _plan_and_run(args, steps, out, label="steps"):
        print(console.ladder_text(write_ladder_tables(steps, out), out))
    return 0


def cmd_sweep(args) -> int:
    from .experiments import budget
    from .experiments.sweep import expand_grid, parse_grid, write_sweep
    grid = parse_grid(args.grid)
    base = load_recipe(args.recipe) if Path(args.recipe).is_file() else load_preset(args.recipe)
    base = make_recipe(base, **_experiment_overrides(args))
    base = budget(base, epochs=args.epochs, long=False) if args.epochs else base
    label = f"{Path(args.recipe).stem}-{Path(args.data).name}"
    out = Path(args.out or out_dir_for("sweeps", label, [args.grid, args.set or [], args.epochs, args.kfold]))
    entries = expand_grid(base, grid, out)
    if _plan_and_run(args, entries, out, label="grid points"):
        rows, _, folds = write_sweep(entries, grid, out)
        _show(*console.sweep_view(rows, grid, folds, out))
    return 0


def cmd_runs(args) -> int:
    from .experiments.runs import check_pattern_or_root, find_runs, run_info
    if len(args.pattern) > 1:  # an unquoted '*x*' the shell expanded into file names
        raise ValueError("usage: sotakit runs [PATTERN] [--root DIR] (quote the pattern: '*resnet*')")
    pattern, root = check_pattern_or_root(args.pattern[0] if args.pattern else None, args.root)
    _show(console.runs_table([run_info(p) for p in find_runs(root, pattern)], root=root), wide=True)
    return 0


def cmd_runs_compare(args) -> int:
    from .experiments.runs import compare_runs, resolve_run, run_info
    a, b = (resolve_run(name, args.root) for name in (args.run_a, args.run_b))
    unfinished = any(run_info(p)["acc_source"] != "test" for p in (a, b))
    _show(*console.compare_tables(a.name, b.name, *compare_runs(a, b), unfinished=unfinished), wide=True)
    return 0


def cmd_report(args) -> int:
    from .experiments.report import write_report
    print(console.report_text(write_report(args.path, out=args.output, samples=args.samples)))
    return 0


def cmd_tune_resize(args) -> int:
    from .evaluate import parse_sizes
    from .train.evaluate_run import tune_run_resize
    res, split = tune_run_resize(args.run_dir, sizes=parse_sizes(args.sizes) if args.sizes else None,
                                 seed=args.seed)  # a line per size on stderr; the table follows
    _show(*console.resize_tuning_view(res, split, args.run_dir))
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "recipes_list": cmd_recipes_list,
            "recipes_show": cmd_recipes_show, "models": cmd_models, "ablate": cmd_ablate, "sweep": cmd_sweep,
            "runs": cmd_runs, "runs_compare": cmd_runs_compare, "report": cmd_report,
            "tune_resize": cmd_tune_resize}


def make_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The root parser and the `train` parser (whose flags check_unknown compares typed options with)."""
    return build_parsers(COMMANDS)


class _Stderr(logging.StreamHandler):
    """A handler writing to the sys.stderr of the moment (pytest's capture, a redirected stream)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def _log_level(argv: list[str]) -> int:
    return logging.ERROR if {"-q", "--quiet"} & set(argv) else (
        logging.DEBUG if {"-v", "--verbose"} & set(argv) else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Notes, warnings and progress go to stderr through the "sotakit" logger (-q: errors only, -v: debug
    too), results to stdout; the handler is removed again on return (main() may run in a user's process)."""
    argv = with_log_flags_first(list(sys.argv[1:] if argv is None else argv))
    handler, level = _Stderr(), log.level
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(_log_level(argv[:argv.index("--")] if "--" in argv else argv))
    try:
        return _main(argv)
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _main(argv: list[str]) -> int:
    parser, train = make_parser()
    lead = next((i for i, a in enumerate(argv) if a not in LOG_FLAGS), len(argv))
    flags, argv = argv[:lead], argv[lead:]  # -q/-v, then the subcommand
    try:
        if argv[:1] in (["train"], ["ablate"], ["sweep"]):
            check_unknown(argv[1:], train if argv[0] == "train" else subcommand(parser, argv[0]), argv[0])
        args = parser.parse_args(flags + with_default_runs_action(argv))
        return args.func(args)
    except (RecipeError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except ExperimentInterrupted as e:  # the runs' checkpoints are kept; the message says how to resume
        print(f"error: {e}", file=sys.stderr)
        return 128 + (signal.SIGINT if e.signum == signal.SIGINT else signal.SIGTERM)
    except RuntimeError as e:
        from .experiments.runner import RunsFailedError
        from .train.checkpoint import CheckpointError
        if not isinstance(e, (CheckpointError, RunsFailedError)):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
