"""The cli layer without a subprocess: console.py's renderers from given dicts, the parser, the
run-directory file between `sotakit train` and the experiment runner."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from sotakit import cli, console
from sotakit.evaluate.resize import ResizeTuning
from sotakit.experiments import runner
from sotakit.experiments.stats import summarize
from sotakit.experiments.sweep import SweepRow
from sotakit.recipes import Recipe


def text(renderable) -> str:
    """What a rich renderable prints on a 200-column terminal, as plain text."""
    c = Console(width=200, record=True, file=io.StringIO())
    c.print(renderable)
    return c.export_text()


def row_of(out: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in\n{out}")


ACC = {"acc1": 91.234, "acc5": 99.5, "n": 100}


def test_summary_text_lists_the_splits_timing_and_skipped_files():
    s = {"run_dir": "runs/x", "holdout": ACC, "test": {"acc1": 90.0, "acc5": 99.0, "n": 200},
         "train_time_s": 12.4, "wall_time_s": 20.6, "median_img_s": 345.6, "skipped_files": 2}
    assert console.summary_text(s) == (
        "run directory: runs/x\n"
        "holdout      acc@1 91.23  acc@5 99.50  (100 images)\n"
        "test         acc@1 90.00  acc@5 99.00  (200 images)\n"
        "train time 12s, wall time 21s, median 346 img/s\n"
        "skipped files: 2 (listed with the reason in data_report.csv)")
    # no throughput measured (no training step): no timing line, no empty line either
    assert console.summary_text({"run_dir": "r", "test_ema": ACC}) == (
        "run directory: r\ntest_ema     acc@1 91.23  acc@5 99.50  (100 images)")


def test_eval_text_names_the_checkpoint_sizes_and_both_models():
    out = {"checkpoint": "runs/x/checkpoint-last.pt", "epoch": 3, "data": "imgs", "val_resize_size": 32,
           "val_crop_size": 28, "test": ACC, "test_ema": {"acc1": 92.0, "acc5": 100.0, "n": 100}}
    assert console.eval_text(out).splitlines() == [
        "runs/x/checkpoint-last.pt (epoch 3) on imgs test split (resize 32, crop 28):",
        "  model      acc@1 91.23  acc@5 99.50  (100 images)",
        "  EMA model  acc@1 92.00  acc@5 100.00  (100 images)"]
    calibrated = {**out, "test": {**ACC, "ece": 3.456, "nll": 0.31234, "brier": 0.12345}}
    assert console.eval_text(calibrated).splitlines()[1] == (
        "  model      acc@1 91.23  acc@5 99.50  (100 images)  ECE 3.46%  NLL 0.3123  Brier 0.1235")


def test_presets_and_preset_text():
    listed = console.presets_text([("a", {"title": "A title"}), ("bb", {})])
    assert listed == f"{'a':28s} A title\n{'bb':28s} "
    shown = console.preset_text(Recipe(model="resnet9_w16"), {"title": "T"}, data="fashion-mnist",
                                notes=["small images", "no CUDA"])
    assert 'resolved_for = "fashion-mnist: small images; no CUDA"' in shown
    assert 'model = "resnet9_w16"' in shown
    assert "resolved_for" not in console.preset_text(Recipe(), {"title": "T"})


def test_models_table_rows():
    rows = [{"name": "m1", "params": 1_234_567, "flops": 2_500_000_000, "error": None},
            {"name": "m2", "params": None, "flops": None, "error": "ValueError: too small [64 px]"}]
    out = text(console.models_table(rows, size=28, small=True))
    assert "models at 28px (small-image stem)" in out
    assert row_of(out, "m1")[:3] == ["m1", "1.23", "2.500"]
    assert row_of(out, "m2") == ["m2", "-", "-", "ValueError: too small [64 px]"]  # brackets are not markup


def test_plan_and_estimate_text(tmp_path):
    entries = [("a", "Step A", tmp_path / "steps" / "a.toml"), ("b", "Step B", tmp_path / "steps" / "b.toml")]
    plan = console.plan_text(entries, runs=4, seeds=2, label="steps", dry_run=False)
    assert plan == f"2 steps x 2 seeds = 4 runs; recipes in {tmp_path / 'steps'}"
    plan = console.plan_text(entries, runs=12, seeds=2, label="steps", dry_run=True).splitlines()
    assert plan[0].startswith("2 steps x 2 seeds x folds = 12 runs")
    assert plan[1:] == [f"  {'Step A':28s} {entries[0][2]}", f"  {'Step B':28s} {entries[1][2]}"]
    est = console.estimate_text(150.0, {("resnet9_w16", 28, 8): 0.004}, 2.04, jobs=2).splitlines()
    assert est[:2] == ["  measured resnet9_w16 28px batch 8: 250 train img/s",
                       "  measured start-up per run (import + data load): 2.0s"]
    assert est[2].startswith("estimated total: ~2min with --jobs 2 (rough:")


def test_sweep_view_tables_and_files(tmp_path):
    rows = [SweepRow("lr-0.2", {"lr": 0.2}, summarize([80.0, 82.0]), summarize([99.0, 99.0])),
            SweepRow("lr-0.1", {"lr": 0.1}, summarize([70.0]), summarize([95.0]))]
    table, written = console.sweep_view(rows, {"lr": [0.1, 0.2]}, None, tmp_path)
    out = text(table)
    assert "sweep lr: test acc@1 over seeds, best first" in out
    assert row_of(out, "0.2") == ["0.2", "2", "81.00 ± 1.41", "81.00", "82.00", "99.00 ± 0.00"]
    assert written == f"written: {tmp_path / 'sweep.md'}, {tmp_path / 'sweep.csv'}, {tmp_path / 'sweep.png'}"
    grid3 = {"lr": [0.1], "wd": [0.0], "epochs": [1]}
    table, folds, written = console.sweep_view([], grid3, "| fold table |", tmp_path)
    assert "validation-fold acc@1 over folds x seeds" in text(table) and folds.endswith("\n| fold table |")
    assert written.endswith("(no plot: 3 knobs; plots are drawn for one knob (line) or two (heat map))")


def tuning(chosen: int, confirmed: bool) -> ResizeTuning:
    return ResizeTuning(sizes=[28, 32, 36], acc_a=[80.0, 81.0, 82.5], acc_b=[79.0, 83.25, 80.0],
                        chosen=chosen, current=32, crop_size=28, n_a=50, n_b=51, confirmed=confirmed)


def test_resize_tuning_table_and_the_three_verdicts():
    table, verdict = console.resize_tuning_view(tuning(36, False), "holdout", "runs/x")
    out = text(table)
    assert "eval resize (crop 28 fixed) on two seeded halves of the holdout split" in out
    assert "half A acc@1 (choose, n=50)" in out and "half B acc@1 (confirm, n=51)" in out
    assert row_of(out, "36") == ["36", "82.50", "80.00", "chosen"] and row_of(out, "32")[-1] == "(was)"
    assert verdict == ("val_resize_size 32 stays: 36 was best on half A but not confirmed on half B "
                       "(80.00 vs 83.25). Recorded in tune_resize.json.")
    assert console.resize_verdict(tuning(36, True), "runs/x") == (
        "val_resize_size 36 (was 32): chosen on half A, confirmed on half B (80.00 vs 83.25). "
        "Stored in runs/x/recipe.toml; `sotakit eval` uses it.")
    assert console.resize_verdict(tuning(32, False), "runs/x") == (
        "val_resize_size 32 stays: no size did better on half A. Recorded in tune_resize.json.")


def test_runs_table_and_compare_tables():
    info = {"name": "20250101-000000-a[1]", "recipe": "", "model": "resnet9_w16", "data": "imgs", "seed": 1,
            "epochs_done": 1, "epochs": 2, "acc1": 61.254, "ema_acc1": None, "wall_time_s": 12.4,
            "img_s": 99.6, "status": "interrupted"}
    out = text(console.runs_table([info], root=None))
    assert "1 runs in runs" in out
    assert row_of(out, "20250101-000000-a[1]") == [  # a [ in a name is text, not markup
        "20250101-000000-a[1]", "-", "resnet9_w16", "imgs", "1", "1/2", "61.25", "-", "12s", "100",
        "interrupted"]
    recipe_table, metric_table = console.compare_tables(
        "a", "b", [("lr", 0.05, 0.1), ("auto_augment", None, "[ta_wide]")],
        [("test acc@1", 70.0, 71.5, 1.5), ("img/s", None, 10.0, None)], unfinished=True)
    out = text(recipe_table)
    assert "recipe difference (2 fields)" in out and "A = a, B = b" in out
    assert row_of(out, "auto_augment") == ["auto_augment", "None", "'[ta_wide]'"]
    out = text(metric_table)
    assert row_of(out, "test acc@1") == ["test acc@1", "70.00", "71.50", "+1.50"]
    assert row_of(out, "img/s") == ["img/s", "-", "10.00", "-"]
    assert "unfinished runs show the last epoch's validation" in " ".join(out.split())  # the caption wraps
    assert "unfinished" not in text(console.compare_tables("a", "b", [], [])[1])


def test_ladder_and_report_text(tmp_path):
    files = f"{tmp_path / 'ablation.md'}, {tmp_path / 'ablation.csv'}, {tmp_path / 'ablation.png'}"
    assert console.ladder_text("| t |", tmp_path) == f"| t |\nwritten: {files}"
    assert console.report_text(tmp_path / "report.html") == f"report written: {tmp_path / 'report.html'}"


# --- the parser ---

def parse(*argv: str):
    parser, _ = cli.make_parser()
    return parser.parse_args(cli.with_default_runs_action(list(argv)))


def test_recipes_list_and_show_are_subcommands():
    assert parse("recipes").func is cli.cmd_recipes_list  # alone, it lists
    assert parse("recipes", "list").func is cli.cmd_recipes_list
    args = parse("recipes", "show", "tv-fixres", "--data", "fashion-mnist")
    assert (args.func, args.name, args.data) == (cli.cmd_recipes_show, "tv-fixres", "fashion-mnist")
    assert parse("recipes", "--data", "cifar10", "show", "tv-ema").data == "cifar10"  # the older order
    assert parse("recipes", "show", "tv-ema").data is None


def test_recipes_show_prints_the_preset(capsys):
    assert cli.main(["recipes", "show", "tv-fixres"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[meta]\n") and 'title = "+ FixRes mitigations"' in out
    assert "resolved_for" not in out  # nothing resolved without --data
    assert cli.main(["recipes", "show", "no-such-preset"]) == 2


@pytest.mark.parametrize("argv, action, pattern", [
    (["runs"], "list", []),
    (["runs", "*resnet*"], "list", ["*resnet*"]),
    (["runs", "--root", "abl", "tv-*"], "list", ["tv-*"]),
    (["runs", "list", "compare"], "list", ["compare"]),  # a run named like an action: say `list`
])
def test_runs_lists_by_default(argv, action, pattern):
    args = parse(*argv)
    assert (args.func, args.action, args.pattern) == (cli.cmd_runs, action, pattern)


def test_runs_compare_takes_two_runs_and_root_anywhere(capsys):
    for argv in (["runs", "compare", "a", "b", "--root", "R"], ["runs", "--root", "R", "compare", "a", "b"]):
        args = parse(*argv)
        assert (args.func, args.run_a, args.run_b, args.root) == (cli.cmd_runs_compare, "a", "b", "R")
    with pytest.raises(SystemExit) as e:
        parse("runs", "compare", "a")  # `sotakit runs compare` too: a PATTERN spelled like the action
    assert e.value.code == 2 and "the following arguments are required: RUN_B" in capsys.readouterr().err


def test_runs_with_two_patterns_says_to_quote(capsys):
    assert cli.main(["runs", "a.py", "b.py"]) == 2  # what an unquoted *.py becomes
    assert "quote the pattern: '*resnet*'" in capsys.readouterr().err


def test_unknown_train_flag_names_the_closest_and_train_flags_live_in_one_parser(capsys):
    assert cli.main(["train", "--lr-sheduler", "steplr"]) == 2
    assert "unknown option --lr-sheduler. Did you mean '--lr-scheduler'?" in capsys.readouterr().err
    _, train = cli.make_parser()
    flags = {s for a in train._actions for s in a.option_strings}
    assert {"--tracker", "--run-dir-file", "--force-resume", "--lr-scheduler"} <= flags


def test_default_experiment_directories_keep_their_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["ablate", "--dry-run", "--no-estimate"]) == 0
    assert "recipes in ablations/torchvision-fashion-mnist-e5-e7974a/steps" in capsys.readouterr().out
    assert cli.main(["sweep", "--recipe", "torchvision-v1", "--grid", "lr=0.1,0.2", "--dry-run",
                     "--no-estimate"]) == 0
    out = capsys.readouterr().out
    assert "2 grid points x 3 seeds = 6 runs; recipes in sweeps/torchvision-v1-fashion-mnist-6bdc2c/" in out
    assert runner.out_dir_for("ablations", "x", [["model=resnet9_w16"], 2.0, 3]) == Path("ablations/x-d32c61")


# --- the run-directory file ---

def fake_child(tmp_path, *, write: bool):
    """A Children.run for run_one: a child that finishes a run in tmp_path/real and prints a misleading
    'run directory:' line; it names the real one in --run-dir-file when ``write``."""
    calls = []

    def run(_children, cmd, env):
        calls.append(cmd)
        real = tmp_path / "real"
        real.mkdir(exist_ok=True)
        (real / "summary.json").write_text(json.dumps({"test": ACC, "median_img_s": 5.0, "environment": {}}))
        if write:
            Path(cmd[cmd.index("--run-dir-file") + 1]).write_text(f"{real}\n")
        return subprocess.CompletedProcess(cmd, 0, stdout="run directory: /not/this/one\n", stderr="")
    return run, calls


def test_runner_reads_the_run_directory_from_the_file_it_names(tmp_path, monkeypatch):
    recipe = tmp_path / "a.toml"
    recipe.write_text("[recipe]\nmodel = 'resnet9_w16'\n")
    run, calls = fake_child(tmp_path, write=True)
    monkeypatch.setattr(runner.Children, "run", run)
    rec = runner.run_one(recipe, 1, tmp_path, threads=1, fold=2)
    assert rec["run_dir"] == str(tmp_path / "real") and rec["acc1"] == ACC["acc1"] and rec["fold"] == 2
    assert rec["recipe_hash"] == runner.config_key(Recipe(model="resnet9_w16"))  # the old field name stays
    assert calls[0][-2:] == ["--fold", "2"]
    assert calls[0][calls[0].index("--run-name") + 1].startswith("a-s1-f2-")  # + configuration: resumable
    assert not Path(calls[0][calls[0].index("--run-dir-file") + 1]).exists()  # in a temporary directory
    run, _ = fake_child(tmp_path, write=False)
    monkeypatch.setattr(runner.Children, "run", run)
    with pytest.raises(RuntimeError, match="exited 0 without naming its run directory"):
        runner.run_one(recipe, 1, tmp_path, threads=1)


def test_train_writes_the_run_directory_file(image_folder, tmp_path, monkeypatch, capsys):
    from sotakit import train
    run_dir = tmp_path / "runs" / "20250101-000000-x"
    results = iter([train.FitResult(run_dir, {"run_dir": str(run_dir), "test": ACC}),
                    train.FitResult(None, {})])
    monkeypatch.setattr(train, "fit", lambda recipe, **kw: next(results))
    out = tmp_path / "out" / "run_dir.txt"
    out.parent.mkdir()
    argv = ["train", "--data", str(image_folder), "--run-dir-file", str(out)]
    assert cli.main(argv) == 0
    assert out.read_text() == f"{run_dir}\n" and f"run directory: {run_dir}" in capsys.readouterr().out
    out.unlink()
    assert cli.main(argv) == 0 and not out.exists()  # a DDP rank other than 0 has no run directory
    assert cli.main(argv + ["--kfold", "3"]) == 2  # K runs, one file: refused before any training
    assert "with --kfold K also give --fold F" in capsys.readouterr().err
