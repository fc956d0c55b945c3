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
from .recipes.recipe import MACHINE_PROBE_CHOICES

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
        n_images = count_train_images(folder)
        if n_images is None:  # no train/ in it: the data load says what a folder needs
            base = Recipe()
        else:
            base, why = recipe_for_data(n_images, peek_native_size(folder))
            if say:
                say(why)
    else:
        base = Recipe()
    if args.config:
        base = load_recipe(args.config, base)
    if args.recipe and "recipe_name" not in overrides:
        overrides["recipe_name"] = args.recipe
    if "machine_probe" not in overrides:  # a choice typed either way (--amp, --no-amp) is the user's
        typed = [k for k in MACHINE_PROBE_CHOICES if k in overrides]
        kept = [k for k in base.machine_probe.split(",") if k and k not in typed]
        if typed:
            overrides["machine_probe"] = ",".join(kept) or "none"
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
    lr_auto(args)
    from .experiments.family import is_family
    if is_family(getattr(args, "model", None)) or args.seeds is not None:
        return _train_family(args)
    if args.jobs != 1 or args.out is not None:
        raise RecipeError("--jobs and --out are for a model family: give --model PATTERN (or a comma list) "
                          "or --seeds N; one run goes under --output-dir")
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


def lr_auto(args) -> None:
    """`--lr auto` is `--lr-auto`: fit() runs the range test and trains at its valley."""
    if getattr(args, "lr", None) != "auto":
        return
    if getattr(args, "resume", None):
        raise RecipeError("--lr auto chooses the lr of a new run; a resumed run keeps its own (drop --lr)")
    del args.lr
    args.lr_auto = True


def cmd_data_stats(args) -> int:
    from .data import color_stats, load_data
    from .train.progress import TaskProgress, task_progress
    bundle = load_data(args.data, args.data_root, progress=task_progress)
    stats, cached = color_stats(bundle, refresh=args.refresh,
                                progress=TaskProgress("measuring colour statistics", unit="images"))
    print(json.dumps(stats.to_dict(), indent=1) if args.json else console.color_stats_text(stats, bundle.name,
                                                                                          cached=cached))
    return 0


def cmd_data_show(args) -> int:
    from .experiments.inspect import write_sample_grid
    print(f"wrote {write_sample_grid(build_recipe(args, say=note), args.out, count=args.count)}")
    return 0


def cmd_bench(args) -> int:
    from .experiments.bench import bench_recipe, bench_table, machine_line
    result = bench_recipe(build_recipe(args, say=note), seconds=args.seconds, blocks=args.blocks)
    print(f"machine: {machine_line()}")
    print(bench_table(result))
    return 0


def cmd_interpret(args) -> int:
    from .experiments.inspect import interpret_run
    print(console.interpret_text(interpret_run(args.run_dir, out=args.out, top=args.top)))
    return 0


def cmd_lr_find(args) -> int:
    from .train.lr_auto import check_one_process, lr_find_for_recipe
    check_one_process()
    recipe = build_recipe(args, say=note)
    result, _ = lr_find_for_recipe(recipe, out=args.out, start_lr=args.start, end_lr=args.end,
                                   num_it=args.steps)
    print(result.summary())
    print(f"wrote {Path(args.out) / 'lr_find.png'} and {Path(args.out) / 'lr_find.json'}")
    return 0


def _train_family(args) -> int:
    """`train --model PATTERN|A,B --seeds N [--jobs J]`: every match with the same recipe over seeds 0..N-1,
    in one family folder (a re-run skips finished runs), then the family table and plot."""
    from .experiments.family import expand_family, match_models, write_family
    own = {"seed", "output_dir", "run_name", "resume", "test_only", "fold"}
    if typed := sorted(set(overrides_from(args)) & own):
        raise RecipeError(f"a model family sets {', '.join('--' + k.replace('_', '-') for k in typed)} "
                          "itself (seeds 0..N-1 with --seeds N, runs under --out); drop it")
    spec = getattr(args, "model", None) or build_recipe(args).model
    models = match_models(spec)
    args.seeds = args.seeds or 1
    base = build_recipe(argparse.Namespace(**{**vars(args), "model": models[0]}), say=note)
    label = f"{spec.replace('*', 'x').replace(',', '+')}-{Path(base.data).name}"
    key = [sorted((k, str(v)) for k, v in overrides_from(args).items()), args.recipe, args.config]
    out = Path(args.out or out_dir_for("families", "".join(c if c.isalnum() or c in "+-_." else "_"
                                                            for c in label), key))
    entries = expand_family(base, models, out)
    if _plan_and_run(args, entries, out, label="models"):
        rows, _ = write_family(entries, out)
        _show(console.family_table(rows, out), f"written: {out / 'family.md'}, {out / 'family.csv'}, "
              f"{out / 'family.png'}; runs: `sotakit runs --root {out}`, TensorBoard: --logdir "
              f"{out / 'runs'}", wide=True)
    return 0


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
    out = evaluate_checkpoint(args.path, data=args.data, data_root=args.data_root, batch_size=args.batch_size,
                              tta=args.tta, tta_beta=args.tta_beta)
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
    from .models.regnet import PUBLISHED
    _show(console.models_table(describe_models(args.pattern, image_size=size, num_classes=args.num_classes,
                                               small_input=small), size=size, small=small,
                               published=PUBLISHED if args.published else None), wide=True)
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
        run_recipes(entries, out, seeds=args.seeds, jobs=args.jobs, tracker=getattr(args, "tracker", None))
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


def cmd_export_weights(args) -> int:
    from .train.run_weights import export_run_weights
    which = "ema" if args.ema else "plain" if args.plain else None
    path, meta = export_run_weights(args.run_dir, out=args.output, which=which)
    print(console.weights_text(path, meta))
    return 0


def cmd_weights_list(args) -> int:
    from .evaluate.weights import read_meta
    from .evaluate.weights_registry import list_registered, registry_dir
    _show(console.weights_table([(name, path, read_meta(path)) for name, path in list_registered()],
                                folder=registry_dir()), wide=True)
    return 0


def cmd_weights_add(args) -> int:
    from .evaluate.weights_registry import add_weights
    print(f"added {args.name}: {add_weights(args.name, args.file)}")
    return 0


def cmd_weights_remove(args) -> int:
    from .evaluate.weights_registry import remove_weights
    print(f"removed {args.name} ({remove_weights(args.name)})")
    return 0


SKIPPED_INPUTS = 4  # predict's exit code when some inputs were skipped (parsers.EXIT_CODES)


def cmd_predict(args) -> int:
    """Predictions to stdout or -o FILE; the skipped inputs, with the reason, also to stderr."""
    from .evaluate.predict import predict
    from .train.progress import TaskProgress
    results = predict(args.weights, args.images, topk=args.topk, batch_size=args.batch_size, tta=args.tta,
                      progress=TaskProgress("predicting", unit="images"))
    skipped = [r for r in results if r.error]
    if skipped and len(skipped) == len(results):
        raise ValueError(f"none of the inputs is a readable image: {console.skipped_text(skipped)}")
    if args.format == "table" and not args.output:
        _show(console.predictions_table(results), wide=True)
    else:
        text = {"json": console.predictions_json, "csv": console.predictions_csv,
                "table": console.predictions_plain}[args.format](results)
        if args.output:
            from .train.checkpoint import write_text_atomic
            write_text_atomic(args.output, text)
        else:
            print(text, end="")
    if skipped:
        print(f"skipped {len(skipped)} of {len(results)} inputs: {console.skipped_text(skipped)}",
              file=sys.stderr)
        return SKIPPED_INPUTS
    return 0


def cmd_calibrate(args) -> int:
    from .train.calibrate_run import calibrate_run
    print(console.calibration_text(calibrate_run(args.run_dir), args.run_dir))
    return 0


def cmd_export(args) -> int:
    from .evaluate.export import export_model
    print(console.export_text(export_model(args.weights, format=args.format, out=args.output)))
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "recipes_list": cmd_recipes_list,
            "recipes_show": cmd_recipes_show, "models": cmd_models, "ablate": cmd_ablate, "sweep": cmd_sweep,
            "runs": cmd_runs, "runs_compare": cmd_runs_compare, "report": cmd_report,
            "tune_resize": cmd_tune_resize, "lr_find": cmd_lr_find,
            "data_stats": cmd_data_stats, "data_show": cmd_data_show, "bench": cmd_bench,
            "interpret": cmd_interpret, "export_weights": cmd_export_weights,
            "weights_list": cmd_weights_list, "weights_add": cmd_weights_add,
            "weights_remove": cmd_weights_remove,
            "predict": cmd_predict, "calibrate": cmd_calibrate, "export": cmd_export}


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
