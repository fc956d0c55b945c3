"""Sweeps: grid parsing and expansion, resumable runs (shared runner), sorted table, plot kinds, K-fold."""

from __future__ import annotations

import json
import math

import pytest
from matplotlib.container import ErrorbarContainer

from sotakit.experiments import config_key, runner
from sotakit.experiments.sweep import expand_grid, parse_grid, parse_sets, plot_sweep, sweep_rows, write_sweep
from sotakit.recipes import RecipeError, load_preset, load_recipe, make_recipe

BASE = make_recipe(load_preset("fashion-mnist-demo"), epochs=2)
QUIET = dict(say=lambda *a: None)


def test_grid_values_take_the_recipe_field_types():
    grid = parse_grid(["random_erase=0,0.1,0.2", "batch_size=64,128", "model_ema=true,false",
                       "clip_grad_norm=none,1"])
    assert grid == {"random_erase": [0.0, 0.1, 0.2], "batch_size": [64, 128], "model_ema": [True, False],
                    "clip_grad_norm": [None, 1.0]}
    assert [type(v) for v in grid["random_erase"] + grid["batch_size"]] == [float] * 3 + [int] * 2


@pytest.mark.parametrize("items, msg", [
    (["lrr=0.1,0.2"], "--grid lrr: unknown recipe key. Did you mean 'lr'?"),
    (["random-erase=0.1"], None),  # dashes as in the flag are accepted
    (["lr=0.1,x"], "lr must be a number, got 'x'"),
    (["lr"], "--grid 'lr': expected KEY=VALUE"),
    (["lr=0.1", "lr=0.2"], "--grid lr given twice"),
    (["lr=0.1,0.1"], "--grid lr: repeated value"),
])
def test_grid_errors_name_the_fix(items, msg):
    if msg is None:
        assert parse_grid(items) == {"random_erase": [0.1]}
        return
    with pytest.raises(RecipeError) as e:
        parse_grid(items)
    assert msg in str(e.value)


def test_set_uses_the_same_key_check():
    assert parse_sets(["model=resnet9_w16"]) == {"model": "resnet9_w16"}
    with pytest.raises(RecipeError, match="--set modle: unknown recipe key. Did you mean 'model'"):
        parse_sets(["modle=x"])


def test_expand_writes_the_cartesian_grid(tmp_path):
    grid = parse_grid(["random_erase=0,0.1,0.2", "lr=0.2,0.5"])
    entries = expand_grid(BASE, grid, tmp_path)
    assert len(entries) == 6 and len({config_key(load_recipe(p)) for _, _, p in entries}) == 6
    got = {(load_recipe(p).random_erase, load_recipe(p).lr) for _, _, p in entries}
    assert got == {(e, lr) for e in (0.0, 0.1, 0.2) for lr in (0.2, 0.5)}
    name, title, path = entries[1]
    assert (name, title, path.parent.name) == ("random_erase-0.0_lr-0.5", "random_erase=0.0 lr=0.5", "points")
    assert load_recipe(path).model == "resnet9_w16"  # the base's other keys are kept
    with pytest.raises(RecipeError, match="epochs must be > 0, got 0"):
        expand_grid(BASE, {"epochs": [0]}, tmp_path)  # a bad point fails before anything runs
    # Issue 9.1: a warm-up as long as the run is accepted, as train accepts it, and kept (not shrunk)
    (_, _, path), = expand_grid(BASE, {"epochs": [1]}, tmp_path)
    assert (load_recipe(path).epochs, load_recipe(path).lr_warmup_epochs) == (1, BASE.lr_warmup_epochs)


def fake_results(table):
    """A run_one that returns acc@1 from ``table[(name, seed, fold)]`` and records its calls."""
    calls = []

    def run_one(path, seed, out_dir, threads, fold=None):
        calls.append((path.stem, seed, fold))
        acc = table[(path.stem, seed, fold)]
        if acc is None:
            raise RuntimeError("killed")
        return {"step": path.stem, "seed": seed, "fold": fold, "recipe_hash": config_key(load_recipe(path)),
                "acc1": acc, "acc5": 99.0, "ema_acc1": None, "ema_acc5": None, "val_acc1": acc - 1,
                "val_acc5": 98.0, "val_ema_acc1": None, "val_ema_acc5": None, "wall_time_s": 1.0}
    return run_one, calls


def test_sweep_resumes_without_repeating_finished_runs(tmp_path, monkeypatch):
    grid = parse_grid(["random_erase=0,0.2"])
    entries = expand_grid(BASE, grid, tmp_path)
    a, b = (n for n, _, _ in entries)
    table = {(a, 0, None): 80.0, (a, 1, None): 82.0, (b, 0, None): None, (b, 1, None): 85.0}
    fake, calls = fake_results(table)
    monkeypatch.setattr(runner, "run_one", fake)
    with pytest.raises(RuntimeError, match="1 run\\(s\\) failed"):  # stopped partway: one run died
        runner.run_recipes(entries, tmp_path, seeds=2, **QUIET)
    table[(b, 0, None)] = 84.0
    calls.clear()
    runner.run_recipes(entries, tmp_path, seeds=2, **QUIET)
    assert calls == [(b, 0, None)]
    calls.clear()
    runner.run_recipes(entries, tmp_path, seeds=2, **QUIET)
    assert calls == []  # everything finished: nothing repeats
    rows, text, folds = write_sweep(entries, grid, tmp_path)
    assert folds is None
    assert [r.point["random_erase"] for r in rows] == [0.2, 0.0]  # best mean first
    assert (rows[0].acc1.n, rows[0].acc1.mean, rows[0].acc1.std) == (2, 84.5, pytest.approx(math.sqrt(0.5)))
    assert "| 0.2 | 2 | 84.50 ± 0.71 | 84.50 | 85.00 | 99.00 ± 0.00 |" in text
    assert (tmp_path / "sweep.csv").read_text().splitlines()[1:] == [
        "0.2,2,84.5000,0.7071,84.5000,85.0000,99.0000,0.0000",
        "0.0,2,81.0000,1.4142,81.0000,82.0000,99.0000,0.0000"]


def write_lines(tmp_path, entries, accs):
    """results.jsonl lines for entries[i] with acc@1 values accs[i] (seeds 0, 1, ...)."""
    with open(tmp_path / "results.jsonl", "w") as f:
        for (name, _, path), values in zip(entries, accs):
            for seed, acc in enumerate(values):
                f.write(json.dumps({"step": name, "seed": seed, "recipe_hash": config_key(load_recipe(path)),
                                    "acc1": acc, "acc5": 90.0, "ema_acc1": None}) + "\n")


def test_table_sorted_by_mean_with_std_and_n(tmp_path):
    grid = parse_grid(["lr=0.1,0.2,0.4"])
    entries = expand_grid(BASE, grid, tmp_path)
    write_lines(tmp_path, entries, [[70.0, 72.0, 74.0], [80.0], [75.0, 76.0]])
    rows = sweep_rows(entries, grid, runner.results_for(entries, tmp_path))
    assert [(r.point["lr"], r.acc1.n, r.acc1.mean, r.acc1.std) for r in rows] == [
        (0.2, 1, 80.0, 0.0), (0.4, 2, 75.5, pytest.approx(math.sqrt(0.5))), (0.1, 3, 72.0, 2.0)]


def test_one_knob_draws_a_line_with_error_bars(tmp_path):
    grid = parse_grid(["lr=0.1,0.2,0.4"])
    entries = expand_grid(BASE, grid, tmp_path)
    write_lines(tmp_path, entries, [[70.0, 72.0, 74.0], [80.0, 80.0], [75.0, 76.0]])
    rows = sweep_rows(entries, grid, runner.results_for(entries, tmp_path))
    fig = plot_sweep(grid, rows, tmp_path / "sweep.png")
    ax = fig.axes[0]
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    line = bars.lines[0]
    assert list(line.get_xdata()) == [0.1, 0.2, 0.4] and list(line.get_ydata()) == [72.0, 80.0, 75.5]
    assert ax.get_xlabel() == "lr" and not ax.images
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_two_knobs_draw_a_heat_map_of_means_and_three_draw_nothing(tmp_path):
    grid = parse_grid(["random_erase=0,0.2", "lr=0.1,0.2,0.4"])
    entries = expand_grid(BASE, grid, tmp_path)  # order: (0, .1) (0, .2) (0, .4) (.2, .1) (.2, .2) (.2, .4)
    write_lines(tmp_path, entries, [[70.0, 72.0], [80.0], [75.0], [60.0], [65.0, 66.0], []])
    rows = sweep_rows(entries, grid, runner.results_for(entries, tmp_path))
    fig = plot_sweep(grid, rows, tmp_path / "sweep.png")
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (2, 3)
    assert image[0].tolist() == [71.0, 80.0, 75.0] and image[1, :2].tolist() == [60.0, 65.5]
    assert image.mask[1, 2] and not image.mask[1, 1]  # the point without results is blank (nan), not zero
    assert (fig.axes[0].get_ylabel(), fig.axes[0].get_xlabel()) == ("random_erase", "lr")
    grid3 = {**grid, "batch_size": [64]}
    assert plot_sweep(grid3, rows, tmp_path / "three.png") is None and not (tmp_path / "three.png").exists()


def test_kfold_runs_every_fold_and_reports_validation_per_fold(tmp_path, monkeypatch):
    grid = parse_grid(["lr=0.1,0.2"])
    entries = expand_grid(make_recipe(BASE, kfold=2), grid, tmp_path)
    a, b = (n for n, _, _ in entries)
    table = {(n, s, f): base + 2 * s + f
             for n, base in ((a, 70.0), (b, 80.0)) for s in (0, 1) for f in (0, 1)}
    fake, calls = fake_results(table)
    monkeypatch.setattr(runner, "run_one", fake)
    runner.run_recipes(entries, tmp_path, seeds=2, **QUIET)
    assert sorted(calls) == sorted(table)  # 2 points x 2 seeds x 2 folds
    rows, text, folds = write_sweep(entries, grid, tmp_path)
    assert folds in (tmp_path / "sweep.md").read_text()
    # the K-fold estimate is the validation fold (test acc - 1 in the fake): b = 79, 80, 81, 82
    assert (rows[0].point["lr"], rows[0].acc1.n, rows[0].acc1.mean) == (0.2, 4, 80.5)
    # per fold (mean over seeds): fold 0 = (79 + 81) / 2, fold 1 = (80 + 82) / 2; test reported apart
    assert "| lr=0.2 | 80.00 | 81.00 | 80.50 ± 1.29 | 4 | 81.50 ± 1.29 |" in folds
