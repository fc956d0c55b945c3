"""Ablation statistics against hand-computed values and scipy; expansion; resumable bookkeeping."""

from __future__ import annotations

import json
import math

import pytest

from sotakit.experiments import (
    ablation,
    budget,
    config_key,
    expand,
    format_table,
    ladder_table,
    runner,
    summarize,
    welch_p,
)
from sotakit.recipes import load_preset, load_recipe, make_recipe


def test_summary_statistics_by_hand():
    s = summarize([76.0, 77.0, 79.0])
    assert (s.n, s.mean, s.median, s.max) == (3, pytest.approx(77.3333333), 77.0, 79.0)
    # sample std: sqrt(((-4/3)^2 + (-1/3)^2 + (5/3)^2) / 2) = sqrt(7/3)
    assert s.std == pytest.approx(math.sqrt(7 / 3))
    assert summarize([5.0]).std == 0.0


def test_welch_p_matches_scipy_and_the_formula():
    a, b = [76.1, 76.4, 75.9], [76.8, 77.1, 76.6, 77.0]
    from scipy.stats import ttest_ind
    assert welch_p(a, b) == pytest.approx(ttest_ind(a, b, equal_var=False).pvalue)
    # Welch's t by hand
    ma, mb = sum(a) / 3, sum(b) / 4
    va = sum((x - ma) ** 2 for x in a) / 2
    vb = sum((x - mb) ** 2 for x in b) / 3
    t = (ma - mb) / math.sqrt(va / 3 + vb / 4)
    assert ttest_ind(a, b, equal_var=False).statistic == pytest.approx(t)
    assert math.isnan(welch_p([1.0], [2.0, 3.0]))


def test_ladder_table_diffs_and_significance():
    steps = [("a", "Baseline"), ("b", "+ B"), ("c", "+ C")]
    acc1 = {"a": [70.0, 71.0, 72.0], "b": [75.0, 76.0, 77.0], "c": [75.5, 76.5, 75.0]}
    acc5 = {k: [90.0] * 3 for k in acc1}
    rows = ladder_table(steps, acc1, acc5)
    assert [r.incremental for r in rows] == pytest.approx([0.0, 5.0, 75.6666667 - 76.0])
    assert [r.absolute for r in rows] == pytest.approx([0.0, 5.0, 4.6666667])
    assert rows[1].significant and not rows[2].significant
    text = format_table(rows)
    assert "| + B | 3 | 76.00 ± 1.00 | 76.00 | 77.00 |" in text and "(n.s.)" in text


def test_budget_keeps_the_share_of_epoch_knobs():
    v1 = load_preset("torchvision-v1")  # 90 epochs, StepLR every 30
    r = budget(v1, epochs=9, long=False)
    assert (r.epochs, r.lr_step_size) == (9, 3)
    long = budget(load_preset("tv-long-training"), epochs=9, long=True)  # 600 epochs, 5 warm-up
    assert (long.epochs, long.lr_warmup_epochs) == (60, 0)  # round(9 * 600 / 90); 5 * 60 / 600 = 0.5 -> 0
    assert budget(load_preset("tv-long-training"), epochs=90, long=True).lr_warmup_epochs == 5


def test_budget_keeps_a_warmup_as_long_as_the_run_like_train():
    """Issue 9.1: one rule in train, sweep and ablate: the warm-up is not shrunk, the note says why."""
    from sotakit.recipes.recipe import warmup_note
    r = budget(make_recipe(epochs=2, lr_warmup_epochs=2, lr_warmup_method="linear"), epochs=1, long=False)
    assert (r.epochs, r.lr_warmup_epochs) == (1, 1)
    assert "the whole run is warm-up" in warmup_note(r)


def test_expand_writes_one_file_per_step_with_overrides(tmp_path):
    steps = expand("torchvision", tmp_path, epochs=3, overrides={"model": "resnet9_w16", "data": "cifar10"})
    assert len(steps) == 13 and all(p.exists() for _, _, p in steps)
    r = load_recipe(steps[-1][2])
    assert (r.model, r.data, r.ra_reps, r.epochs) == ("resnet9_w16", "cifar10", 4, 20)


def test_rerun_skips_finished_runs(tmp_path, monkeypatch):
    steps = expand("torchvision", tmp_path, epochs=2, overrides={"model": "resnet9_w16"})[:2]
    calls = []

    def fake_run_one(path, seed, out_dir, threads, fold=None):  # the bookkeeping is under test, not training
        calls.append((path.stem, seed))
        if len(calls) == 3:
            raise RuntimeError("killed")  # the third run dies
        # the EMA model is reported when there is one
        ema = 80.0 if path.stem == "tv-lr-optimizations" else None
        return {"step": path.stem, "seed": seed, "recipe_hash": config_key(load_recipe(path)),
                "acc1": 70.0 + seed, "acc5": 90.0, "ema_acc1": ema, "ema_acc5": ema, "wall_time_s": 1.0}

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    with pytest.raises(RuntimeError, match="1 run\\(s\\) failed; re-run the same command") as e:
        runner.run_recipes(steps, tmp_path, seeds=2, say=lambda *a: None)
    assert f"{steps[1][0]} seed 0: killed" in str(e.value)
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 3  # the others finished
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"step": "tv-lr-optimiz')  # a line torn by a kill mid-write
    calls.clear()
    runner.run_recipes(steps, tmp_path, seeds=2, say=lambda *a: None)
    assert calls == [(steps[1][0], 0)]  # only what had not finished
    lines = runner.read_results(tmp_path / "results.jsonl")
    assert sorted((x["step"], x["seed"]) for x in lines) == sorted(
        (s, k) for s, _, _ in steps for k in (0, 1))
    table = ablation.write_ladder_tables(steps, tmp_path)
    assert "ResNet50 Baseline" in table and (tmp_path / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    csv = (tmp_path / "ablation.csv").read_text().splitlines()
    assert csv[1].startswith("tv-baseline,2,70.5000") and csv[2].startswith("tv-lr-optimizations,2,80.0000")


@pytest.mark.slow
def test_real_runs_end_to_end(image_folder, tmp_path):
    steps = expand("torchvision", tmp_path, epochs=1,
                   overrides={"model": "resnet9_w16", "data": str(image_folder), "batch_size": 8,
                              "device": "cpu"})
    runner.run_recipes(steps[:1], tmp_path, seeds=2, say=lambda *a: None)
    recs = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["step"], r["seed"]) for r in recs] == [("tv-baseline", 0), ("tv-baseline", 1)]
    for r in recs:
        run_dir = tmp_path / "runs" / r["run_dir"].rsplit("/", 1)[1]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert r["acc1"] == summary["test"]["acc1"] and summary["seed"] == r["seed"]
        assert summary["test"]["n"] == 12


def test_budget_leaves_the_step_size_of_other_schedules_alone():
    r = budget(load_preset("tv-lr-optimizations"), epochs=9, long=False)  # cosine
    assert r.lr_step_size == 30 and r.epochs == 9


def test_budget_gives_the_ema_a_horizon_of_a_tenth_of_its_updates():
    """Issue 9.2: a short-cycle budget is not ImageNet's: the EMA averages over 0.1 of the run."""
    assert budget(load_preset("tv-ema"), epochs=4, long=False).model_ema_horizon == 0.1
    assert load_preset("tv-ema").model_ema_horizon is None  # the preset itself keeps the reference formula


def test_fastai_ladder_runs_and_tabulates_like_torchvision_s(tmp_path, monkeypatch):
    steps = expand("fastai-ch7", tmp_path, epochs=2, overrides={"model": "resnet9_w16"})
    assert len(steps) == 8 and load_recipe(steps[3][2]).progressive_resize_epochs == 1  # 4 of 9 -> 1 of 2

    def fake_run_one(path, seed, out_dir, threads, fold=None):
        r = load_recipe(path)
        summary = {"test": {"acc1": 60.0 + seed}, **({"test_tta": {"acc1": 62.0 + seed}} if r.tta else {})}
        return {"step": path.stem, "seed": seed, "recipe_hash": config_key(r),
                **runner.result_metrics(summary), "wall_time_s": 1.0}

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    runner.run_recipes(steps, tmp_path, seeds=2, say=lambda *a: None)
    table, tta = ablation.write_ladder_tables(steps, tmp_path).split("Test-time augmentation, reported apart")
    rows = [line for line in table.splitlines() if line.startswith("| ") and "| 2 |" in line]
    assert [r.split(" | ")[0].removeprefix("| ") for r in rows] == [t for _, t, _ in steps]
    assert all("| 60.50 ± 0.71 |" in r for r in rows)  # the plain accuracy: TTA never mixed in
    tta_rows = [line for line in tta.splitlines() if line.startswith("| +") or line.startswith("| all")]
    assert len(tta_rows) == 4 and all(r.endswith("| 62.50 ± 0.71 | 60.50 ± 0.71 | +2.00 |") for r in tta_rows)


@pytest.mark.slow  # one real run of the nn-tools ladder's LR-finder step
def test_nn_tools_lr_finder_step_runs_the_range_test(image_folder, tmp_path):
    tiny = {"model": "resnet9_w16", "data": str(image_folder), "batch_size": 8, "device": "cpu"}
    steps = expand("nn-tools", tmp_path, epochs=1, overrides=tiny)
    runner.run_recipes(steps[1:2], tmp_path, seeds=1, say=lambda *a: None)
    (rec,) = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    run_dir = tmp_path / "runs" / rec["run_dir"].rsplit("/", 1)[1]
    assert rec["step"] == "nn-lr-finder"
    assert "--lr auto: lr-find over" in (run_dir / "recipe.toml").read_text()
