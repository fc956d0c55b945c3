"""The `sotakit` command: argument parsing only; each subcommand calls one function below."""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys

from .recipes import (Recipe, RecipeError, dump_recipe, list_presets, load_preset, load_recipe, make_recipe,
                      preset_meta, resolve)
from .recipes.flags import add_recipe_arguments, check_unknown, overrides_from


def build_recipe(args: argparse.Namespace) -> Recipe:
    """Preset (or reference defaults), then --config file, then the flags the user typed."""
    base = load_preset(args.recipe) if args.recipe else Recipe()
    if args.config:
        base = load_recipe(args.config, base)
    overrides = overrides_from(args)
    if "data_path" in overrides and "data" not in overrides:
        overrides["data"] = overrides["data_path"]  # the reference's --data-path means --data PATH
    if args.recipe and "recipe_name" not in overrides:
        overrides["recipe_name"] = args.recipe
    return make_recipe(base, **overrides)


def cmd_train(args, argv) -> int:
    from .train import fit
    if args.tracker:  # fail before loading data when the tracker's package is missing
        from .train.trackers import require
        require(args.tracker)
    if args.resume_run:
        extra = sorted(set(overrides_from(args)) - {"resume"})
        if extra or args.recipe or args.config:
            raise RecipeError(f"--resume continues a run with the recipe saved in it; drop {', '.join(extra) or '--recipe/--config'} "
                              "(or start a new run with --weights to begin from its weights)")
        result = _run_fit(lambda: fit(resume=args.resume_run, force_resume=args.force_resume,
                                      tracker=args.tracker))
    else:
        recipe = build_recipe(args)
        if recipe.test_only:
            return _test_only(recipe)
        if args.dry_run:
            print(dump_recipe(recipe), end="")
            return 0
        if recipe.kfold and "fold" not in overrides_from(args):
            return _train_folds(args, recipe)
        result = _run_fit(lambda: fit(recipe, tracker=args.tracker))
    if isinstance(result, int):
        return result
    if result.run_dir is not None:  # rank 0 only under DDP
        if args.run_dir_file:
            from .train.checkpoint import write_text_atomic
            write_text_atomic(args.run_dir_file, f"{result.run_dir}\n")  # whole or absent, never torn
        print(_summary_text(result.summary))
    return 0


def _train_folds(args, recipe: Recipe) -> int:
    """`train --kfold K` without --fold: the K fits one after another, then per-fold and mean ± std."""
    from .experiments.kfold import fit_folds
    from .train import fit
    if args.run_dir_file:
        raise RecipeError("--run-dir-file names one run's directory; with --kfold K also give --fold F")
    out = _run_fit(lambda: fit_folds(recipe, fit=fit))
    if isinstance(out, int):
        return out
    print(out[1])
    return 0


def _test_only(recipe: Recipe) -> int:
    """The reference's --test-only: evaluate --resume or --weights and exit."""
    source = recipe.resume or recipe.weights
    if not source:
        raise RecipeError("--test-only needs --resume RUN_DIR or --weights FILE to evaluate")
    from .train.evaluate_run import evaluate_checkpoint
    out = evaluate_checkpoint(source)
    _print_eval(out)
    return 0


def _print_eval(out: dict) -> None:
    print(f"{out['checkpoint']} (epoch {out['epoch']}) on {out['data']} test split "
          f"(resize {out['val_resize_size']}, crop {out['val_crop_size']}):")
    for key, label in (("test", "model"), ("test_ema", "EMA model")):
        if key in out:
            m = out[key]
            print(f"  {label:10s} acc@1 {m['acc1']:.2f}  acc@5 {m['acc5']:.2f}  ({m['n']} images)")


def _run_fit(call):
    """Exit codes: 143 stopped by SIGTERM/SIGUSR1 (checkpoint written), 130 by Ctrl-C, 3 non-finite loss,
    1 a failure the message explains (checkpoint write, data loading, DDP peer), 2 refused resume."""
    from .train import Interrupted, NonFiniteLossError
    from .train.fit import ResumeMismatchError, RunError
    try:
        return call()
    except Interrupted as e:
        signum = getattr(e, "signum", None) or signal.SIGTERM
        return 128 + (signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
    except NonFiniteLossError:
        return 3
    except RunError:
        return 1  # the message was shown by fit()
    except ResumeMismatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _summary_text(s: dict) -> str:
    lines = [f"run directory: {s['run_dir']}"]
    for split in ("holdout", "holdout_ema", "test", "test_ema"):
        if split in s:
            m = s[split]
            lines.append(f"{split:12s} acc@1 {m['acc1']:.2f}  acc@5 {m['acc5']:.2f}  ({m['n']} images)")
    lines.append(f"train time {s['train_time_s']:.0f}s, wall time {s['wall_time_s']:.0f}s, "
                 f"median {s['median_img_s']:.0f} img/s" if s.get("median_img_s") else "")
    if s.get("skipped_files"):
        lines.append(f"skipped files: {s['skipped_files']} (listed with the reason in data_report.csv)")
    return "\n".join(x for x in lines if x)


def cmd_eval(args, argv) -> int:
    from .train.evaluate_run import evaluate_checkpoint
    out = evaluate_checkpoint(args.path, data=args.data, data_root=args.data_root, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    _print_eval(out)
    return 0


def cmd_recipes(args, argv) -> int:
    if args.action == "show":
        if not args.name:
            raise RecipeError("usage: sotakit recipes show NAME [--data D]")
        recipe = load_preset(args.name)
        notes = []
        if args.data:
            from .data.datasets import peek_native_size
            import torch
            recipe, notes = resolve(recipe, native_size=peek_native_size(args.data), cuda_available=torch.cuda.is_available())
            recipe = recipe.replace(data=args.data)
        meta = dict(preset_meta(args.name))
        if notes:
            meta["resolved_for"] = f"{args.data}: " + "; ".join(notes)
        print(dump_recipe(recipe, meta), end="")
        return 0
    for name in list_presets():
        meta = preset_meta(name)
        print(f"{name:28s} {meta.get('title', '')}")
    return 0


def cmd_models(args, argv) -> int:
    from .models import describe_models
    size, small = 224, False
    if args.data:
        from .data.datasets import peek_native_size
        size = peek_native_size(args.data) or 224
        small = size <= 64
    rows = describe_models(args.pattern, image_size=size, num_classes=args.num_classes, small_input=small)
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"models at {size}px" + (" (small-image stem)" if small else ""))
    for col in ("model", "params (M)", "GFLOPs", "note"):
        table.add_column(col, justify="right" if col != "model" and col != "note" else "left")
    for r in rows:
        flops = r.get("flops")
        table.add_row(r["name"], f"{r['params'] / 1e6:.2f}" if r.get("params") is not None else "-",
                      f"{flops / 1e9:.3f}" if flops else "-", r.get("error") or "")
    Console().print(table)
    return 0


def _plan(entries, *, seeds: int, jobs: int, dry_run: bool, estimate: bool, label: str) -> None:
    """Print the recipe files, the number of runs and (dry run) a time estimate from a measured warm-up."""
    from .experiments.estimate import estimate_entries, format_duration
    from .experiments.runner import folds_of
    runs = sum(seeds * len(folds_of(load_recipe(path))) for _, _, path in entries)
    print(f"{len(entries)} {label} x {seeds} seeds" + (" x folds" if runs != len(entries) * seeds else "")
          + f" = {runs} runs; recipes in {entries[0][2].parent}")
    if not dry_run:
        return
    for _, title, path in entries:
        print(f"  {title:28s} {path}")
    if estimate:
        total, per_image, startup = estimate_entries(entries, seeds=seeds, jobs=jobs)
        for (model, size, batch), sec in per_image.items():
            print(f"  measured {model} {size}px batch {batch}: {1 / sec:.0f} train img/s")
        print(f"  measured start-up per run (import + data load): {startup:.1f}s")
        print(f"estimated total: ~{format_duration(total)} with --jobs {jobs} (rough: measured over 8 steps after "
              "2 warm-up steps, eval counted at 1/3 of a training image, jobs assumed to share the cores perfectly, "
              "other agents' load not known)")


def cmd_ablate(args, argv) -> int:
    from pathlib import Path

    from .experiments import expand, run_recipes, write_ladder_tables
    from .experiments.sweep import parse_sets
    overrides = {"data": args.data, **parse_sets(args.set)}
    if args.kfold:
        overrides["kfold"] = args.kfold
    tag = hashlib.sha256(json.dumps([args.set or [], args.long_factor, args.kfold]).encode()).hexdigest()[:6]
    out = Path(args.out or f"ablations/{args.ladder}-{Path(args.data).name}-e{args.epochs}-{tag}")
    steps = expand(args.ladder, out, epochs=args.epochs, long_factor=args.long_factor, overrides=overrides)
    _plan(steps, seeds=args.seeds, jobs=args.jobs, dry_run=args.dry_run, estimate=not args.no_estimate,
          label="steps")
    if args.dry_run:
        return 0
    run_recipes(steps, out, seeds=args.seeds, jobs=args.jobs)
    print(write_ladder_tables(steps, out))
    print(f"written: {out / 'ablation.md'}, {out / 'ablation.csv'}, {out / 'ablation.png'}")
    return 0


# --- runs, compare, report (issue 4 section 4) ---
def cmd_runs(args, argv) -> int:
    from rich.console import Console

    from .experiments.runs import check_pattern_or_root, compare_tables, find_runs, resolve_run, run_info, runs_table
    if args.words[:1] == ["compare"]:
        if len(args.words) != 3:
            raise ValueError("usage: sotakit runs compare RUN_A RUN_B [--root DIR]")
        console = Console() if sys.stdout.isatty() else Console(width=200)
        for table in compare_tables(*(resolve_run(w, args.root) for w in args.words[1:])):
            console.print(table)
        return 0
    if len(args.words) > 1:
        raise ValueError("usage: sotakit runs [PATTERN] [--root DIR] (quote the pattern: '*resnet*')")
    pattern, root = check_pattern_or_root(args.words[0] if args.words else None, args.root)
    runs = find_runs(root, pattern)
    console = Console() if sys.stdout.isatty() else Console(width=200)  # piped: no 80-column squeeze
    console.print(runs_table([run_info(p) for p in runs], title=f"{len(runs)} runs in {root or 'runs'}"))
    return 0


def cmd_report(args, argv) -> int:
    from .experiments.report import write_report
    print(f"report written: {write_report(args.path, out=args.output, samples=args.samples)}")
    return 0


def add_report_parsers(sub) -> None:
    r = sub.add_parser("runs", help="list runs as a table; `runs compare A B` diffs two runs")
    r.add_argument("words", nargs="*", metavar="PATTERN | compare RUN_A RUN_B")
    r.add_argument("--root", help="runs folder or ablation directory (default: ./runs)")
    r.set_defaults(func=cmd_runs)
    h = sub.add_parser("report", help="one self-contained HTML report of a run or an ablation")
    h.add_argument("path", metavar="RUN_DIR|ABLATION_DIR")
    h.add_argument("-o", "--output", help="HTML file (default: PATH/report.html)")
    h.add_argument("--samples", type=int, default=16, help="augmented training images in the grid")
    h.set_defaults(func=cmd_report)
    sub.choices["train"].add_argument("--tracker", choices=("mlflow", "wandb"),
                                      help="also log the recipe and metrics to MLflow or W&B (offline)")
# --- end runs, compare, report ---


def cmd_sweep(args, argv) -> int:
    from pathlib import Path

    from rich.console import Console

    from .experiments import budget, run_recipes
    from .experiments.sweep import expand_grid, parse_grid, parse_sets, rich_table, write_sweep
    grid = parse_grid(args.grid)
    base = load_recipe(args.recipe) if Path(args.recipe).is_file() else load_preset(args.recipe)
    base = make_recipe(base, data=args.data, **parse_sets(args.set), **({"kfold": args.kfold} if args.kfold else {}))
    if args.epochs:
        base = budget(base, epochs=args.epochs, long=False)
    tag = hashlib.sha256(json.dumps([args.grid, args.set or [], args.epochs, args.kfold]).encode()).hexdigest()[:6]
    out = Path(args.out or f"sweeps/{Path(args.recipe).stem}-{Path(args.data).name}-{tag}")
    entries = expand_grid(base, grid, out)
    _plan(entries, seeds=args.seeds, jobs=args.jobs, dry_run=args.dry_run, estimate=not args.no_estimate,
          label="grid points")
    if args.dry_run:
        return 0
    run_recipes(entries, out, seeds=args.seeds, jobs=args.jobs)
    rows, _, folds = write_sweep(entries, grid, out)
    what = "validation-fold acc@1 over folds x seeds" if folds else "test acc@1 over seeds"
    Console().print(rich_table(rows, grid, title=f"sweep {' x '.join(grid)}: {what}, best first"))
    if folds:
        print("per fold (validation acc@1, mean over seeds; the test split reported apart, never used to choose):")
        print(folds)
    plot = out / "sweep.png" if len(grid) <= 2 else None
    print(f"written: {out / 'sweep.md'}, {out / 'sweep.csv'}" + (f", {plot}" if plot else
          f" (no plot: {len(grid)} knobs; plots are drawn for one knob (line) or two (heat map))"))
    return 0


def cmd_tune_resize(args, argv) -> int:
    from rich.console import Console
    from rich.table import Table

    from .evaluate import parse_sizes
    from .train.evaluate_run import tune_run_resize
    res, split = tune_run_resize(args.run_dir, sizes=parse_sizes(args.sizes) if args.sizes else None, seed=args.seed,
                                 say=lambda m: print(m, file=sys.stderr))  # progress; the table follows
    t = Table(title=f"eval resize (crop {res.crop_size} fixed) on two seeded halves of the {split} split")
    for col in ("val_resize_size", f"half A acc@1 (choose, n={res.n_a})", f"half B acc@1 (confirm, n={res.n_b})", ""):
        t.add_column(col, justify="right")
    for size, a, b in zip(res.sizes, res.acc_a, res.acc_b):
        mark = " ".join(x for x, on in (("chosen", size == res.chosen), ("(was)", size == res.current)) if on)
        t.add_row(str(size), f"{a:.2f}", f"{b:.2f}", mark)
    Console().print(t)
    i, j = res.sizes.index(res.chosen), res.sizes.index(res.current)
    if res.chosen == res.current:
        print(f"val_resize_size {res.current} stays: no size did better on half A. Recorded in tune_resize.json.")
    elif res.confirmed:
        print(f"val_resize_size {res.chosen} (was {res.current}): chosen on half A, confirmed on half B "
              f"({res.acc_b[i]:.2f} vs {res.acc_b[j]:.2f}). Stored in {args.run_dir}/recipe.toml; `sotakit eval` uses it.")
    else:
        print(f"val_resize_size {res.current} stays: {res.chosen} was best on half A but not confirmed on half B "
              f"({res.acc_b[i]:.2f} vs {res.acc_b[j]:.2f}). Recorded in tune_resize.json.")
    return 0


def _experiment_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kfold", type=int, default=0, metavar="K",
                   help="run every configuration on K stratified folds of the training set (fold = validation)")
    p.add_argument("--dry-run", action="store_true", help="write and list the recipe files, count runs, estimate time")
    p.add_argument("--no-estimate", action="store_true", help="with --dry-run: skip the measured time estimate")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sotakit", description="Train state-of-the-art image classifiers.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model from a recipe", allow_abbrev=False)
    t.add_argument("--recipe", help="preset name (see `sotakit recipes`)")
    t.add_argument("--config", help="recipe TOML file")
    t.add_argument("--dry-run", action="store_true", help="print the recipe and exit")
    t.add_argument("--force-resume", action="store_true",
                   help="with --resume: continue although the model, classes, recipe or data changed (same model "
                        "and classes: all state is loaded; otherwise only the weights whose name and shape match)")
    t.add_argument("--run-dir-file", metavar="FILE", help="when the run has finished, write its directory "
                   "to FILE (for scripts; the ablate and sweep runner reads it)")
    add_recipe_arguments(t)
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("eval", help="evaluate a run directory or checkpoint")
    e.add_argument("path")
    e.add_argument("--data")
    e.add_argument("--data-root")
    e.add_argument("-b", "--batch-size", type=int)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)
    r = sub.add_parser("recipes", help="list presets, or show one resolved for a data set")
    r.add_argument("action", nargs="?", choices=("list", "show"), default="list")
    r.add_argument("name", nargs="?")
    r.add_argument("--data")
    r.set_defaults(func=cmd_recipes)
    m = sub.add_parser("models", help="list models with parameters and FLOPs")
    m.add_argument("pattern", nargs="?")
    m.add_argument("--data")
    m.add_argument("--num-classes", type=int, default=10)
    m.set_defaults(func=cmd_models)
    a = sub.add_parser("ablate", help="the stacked-improvements ladder over several seeds, as the blog's table")
    a.add_argument("--ladder", default="torchvision")
    a.add_argument("--data", default="fashion-mnist")
    a.add_argument("--seeds", type=int, default=3)
    a.add_argument("--epochs", type=int, default=5, help="short-cycle epochs of every step")
    a.add_argument("--long-factor", type=float, default=600 / 90, help="epoch multiplier from the long-training step on")
    a.add_argument("--jobs", type=int, default=1, help="trainings at once (cores divided between them)")
    a.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe key in every step")
    a.add_argument("--out", help="ablation directory (default: ablations/<ladder>-<data>-e<epochs>)")
    _experiment_flags(a)
    a.set_defaults(func=cmd_ablate)
    add_report_parsers(sub)
    w = sub.add_parser("sweep", help="a grid of recipe knobs over several seeds: sorted table and plot")
    w.add_argument("--recipe", required=True, help="preset name or recipe TOML file the grid starts from")
    w.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,...",
                   help="a recipe key and its values; repeat for more knobs (cartesian product)")
    w.add_argument("--data", default="fashion-mnist")
    w.add_argument("--seeds", type=int, default=3)
    w.add_argument("--epochs", type=int, help="epochs of every run (warm-up and StepLR step keep their share)")
    w.add_argument("--jobs", type=int, default=1, help="trainings at once (cores divided between them)")
    w.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe key in every point")
    w.add_argument("--out", help="sweep directory (default: sweeps/<recipe>-<data>-<hash>)")
    _experiment_flags(w)
    w.set_defaults(func=cmd_sweep)
    z = sub.add_parser("tune-resize", help="choose a run's eval resize on half of its validation data, confirm on the other")
    z.add_argument("run_dir")
    z.add_argument("--sizes", metavar="A:B:STEP",
                   help="resize sizes, B included (default 224:256:8 for a 224 crop, the same relative range for others)")
    z.add_argument("--seed", type=int, default=0, help="seed of the stratified half split")
    z.set_defaults(func=cmd_tune_resize)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    try:
        if argv and argv[0] == "train":
            check_unknown(argv[1:], parser._subparsers._group_actions[0].choices["train"])
        args = parser.parse_args(argv)
        if args.command == "train":
            # --resume RUN_DIR continues a run: its recipe comes from the run, not from flags.
            args.resume_run = getattr(args, "resume", None) if not getattr(args, "test_only", False) else None
        return args.func(args, argv)
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except RuntimeError as e:
        from .train.checkpoint import CheckpointError
        if not isinstance(e, CheckpointError):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
