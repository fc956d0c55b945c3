"""The dry-run time estimate: images per run, the arithmetic, one measurement per distinct config."""

from __future__ import annotations

import types

import pytest

from sotakit.experiments import estimate
from sotakit.experiments.estimate import RunCost, estimate_entries, estimate_seconds, run_cost
from sotakit.experiments.sweep import expand_grid
from sotakit.recipes import make_recipe, resolve

BASE = dict(model="resnet9_w16", batch_size=4, epochs=3, train_limit=2000, test_limit=500)


def test_images_per_run():
    # no holdout: every epoch trains 2000 and evaluates the 500 test images, plus the final test pass
    assert (run_cost(make_recipe(**BASE), n_train=60000, n_test=10000)
            == RunCost(("resnet9_w16", 224, 4), 6000, 2000))
    # 4 folds: 1500 train, 500 validation a fold; validation every epoch + final validation and test;
    # EMA doubles eval
    c = run_cost(make_recipe(**BASE, kfold=4, fold=1, model_ema=True), n_train=60000, n_test=10000)
    assert (c.train_images, c.eval_images) == (3 * 1500, 2 * (3 * 500 + 500 + 500))
    # limits larger than the data mean all of it
    assert run_cost(make_recipe(**BASE), n_train=100, n_test=10).train_images == 300


def test_estimate_arithmetic_is_exact():
    costs = [RunCost(("a", 28, 4), 6000, 2000)] * 4 + [RunCost(("b", 28, 4), 3000, 300)] * 2
    rate = {("a", 28, 4): 0.002, ("b", 28, 4): 0.01}  # seconds per training image
    expected = (4 * (6000 + 2000 / 3) * 0.002 + 2 * (3000 + 300 / 3) * 0.01) / 3
    assert estimate_seconds(costs, rate, jobs=3) == pytest.approx(expected, rel=1e-12)
    # each of the 6 runs is its own process: its start-up counts once per run
    assert (estimate_seconds(costs, rate, jobs=3, startup_s=4.5)
            == pytest.approx(expected + 6 * 4.5 / 3, rel=1e-12))


def test_each_distinct_config_is_measured_once_and_runs_multiply(image_folder, tmp_path):
    base = make_recipe(**{**BASE, "train_limit": 0, "test_limit": 0, "epochs": 2}, data=str(image_folder),
                       kfold=3)
    # 2 batch sizes: 2 configs
    entries = expand_grid(base, {"lr": [0.1, 0.2], "batch_size": [4, 6]}, tmp_path)
    measured = []

    def fake_measure(recipe, bundle):
        measured.append((recipe.model, recipe.train_crop_size, recipe.batch_size))
        return 0.001 * recipe.batch_size
    total, per_image, startup = estimate_entries(entries, seeds=2, jobs=2, say=lambda *a: None,
                                                 measure=fake_measure, startup=lambda data, root: 3.0)
    size = resolve(base, native_size=32)[0].train_crop_size  # 32 px images: the crop follows the data
    # once per config, plus one untimed first pass in the process
    assert sorted(measured) == [("resnet9_w16", size, 4)] * 2 + [("resnet9_w16", size, 6)]
    # 36 train images in 3 folds: 24 train + 12 validation; 12 test images; 2 epochs
    per_run = 2 * 24 + (2 * 12 + 12 + 12) / 3
    # 4 points x 2 seeds x 3 folds, half at 0.004 s/img and half at 0.006 s/img, over 2 jobs
    assert total == pytest.approx((12 * per_run * (0.004 + 0.006) + 24 * 3.0) / 2) and startup == 3.0


@pytest.mark.slow
def test_measurement_skips_warm_up_steps(image_folder, monkeypatch):
    # A clock that advances 1 s per reading: the measured time is (end - start) = 1 s over the timed images.
    ticks = iter(range(100))
    monkeypatch.setattr(estimate, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    from sotakit.data import load_data
    bundle = load_data(str(image_folder))
    r, _ = resolve(make_recipe(model="resnet9_w16", batch_size=4), native_size=bundle.native_size)
    assert (estimate.measure_seconds_per_image(r, bundle, warmup=2, steps=3)
            == pytest.approx(1 / 12))  # 3 steps x 4


def test_ablate_dry_run_prints_files_runs_and_estimate(image_folder, tmp_path, capsys, monkeypatch):
    from sotakit.cli import main
    monkeypatch.setattr(estimate, "measure_seconds_per_image", lambda recipe, bundle: 0.01)
    monkeypatch.setattr(estimate, "measure_startup_s", lambda data, root: 2.0)
    args = ["ablate", "--data", str(image_folder), "--seeds", "2", "--epochs", "1", "--jobs", "2", "--kfold",
            "3", "--set", "model=resnet9_w16", "--out", str(tmp_path / "abl"), "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert ("13 steps x 2 seeds x folds = 78 runs" in out
            and str(tmp_path / "abl" / "steps" / "tv-baseline.toml") in out)
    assert "estimated total: ~" in out and "with --jobs 2 (rough:" in out
    assert main(args + ["--no-estimate"]) == 0
    assert "estimated" not in capsys.readouterr().out


def test_ablate_prints_the_estimate_of_the_runs_still_to_do_before_it_runs(image_folder, tmp_path, capsys,
                                                                           monkeypatch):
    """Issue 9: the expected duration at start, for the runs not yet in results.jsonl."""
    import json

    import sotakit.experiments as experiments
    from sotakit.cli import main
    from sotakit.experiments.runner import config_key, runs_to_do
    from sotakit.recipes import load_recipe
    monkeypatch.setattr(estimate, "measure_seconds_per_image", lambda recipe, bundle: 0.01)
    monkeypatch.setattr(estimate, "measure_startup_s", lambda data, root: 2.0)
    ran = []
    monkeypatch.setattr(experiments, "run_recipes", lambda entries, out, **kw: ran.append(len(entries)))
    monkeypatch.setattr(experiments, "write_ladder_tables", lambda steps, out: "")
    out = tmp_path / "abl"
    args = ["ablate", "--data", str(image_folder), "--seeds", "2", "--epochs", "1",
            "--set", "model=resnet9_w16", "--out", str(out)]
    assert main(args + ["--dry-run"]) == 0
    planned = capsys.readouterr().out
    assert main(args) == 0 and ran == [13]
    started = capsys.readouterr().out
    total = next(line for line in planned.splitlines() if line.startswith("estimated total"))
    assert total.endswith(" for the 26 runs still to do") and started.count(total) == 1  # the same, at start
    # one run recorded as finished: 25 to do
    first = sorted((out / "steps").glob("*.toml"))[0]
    (out / "results.jsonl").write_text(json.dumps({"recipe_hash": config_key(load_recipe(first)), "seed": 0,
                                                   "fold": None}) + "\n")
    todo = runs_to_do(experiments.expand("torchvision", out, epochs=1,
                                         overrides={"data": str(image_folder), "model": "resnet9_w16"}),
                      out, seeds=2)
    assert len(todo) == 25 and (first, 0, None) not in todo
