"""Issue 9, point 9: n = 1 has no std, `runs compare` warns about different test sets."""

from __future__ import annotations

import json

from rich.console import Console

from sotakit import console
from sotakit.experiments.runs import compare_runs
from sotakit.experiments.stats import format_table, ladder_table, mean_std, summarize
from sotakit.recipes import dump_recipe, make_recipe


def test_a_single_value_is_printed_with_n_1_and_no_std():
    assert mean_std(summarize([71.2])) == "71.20 (n = 1)"
    assert mean_std(summarize([71.0, 72.0])) == "71.50 ± 0.71"
    table = format_table(ladder_table([("a", "Baseline")], {"a": [61.25]}, {"a": [90.0]}))
    assert "| Baseline | 1 | 61.25 (n = 1) |" in table and "±" not in table.splitlines()[-1]


def fake_run(root, name, *, fingerprint, **recipe):
    d = root / name
    d.mkdir(parents=True)
    (d / "recipe.toml").write_text(dump_recipe(make_recipe(data="fashion-mnist", **recipe)))
    (d / "summary.json").write_text(json.dumps({"data": "fashion-mnist", "data_fingerprint": fingerprint,
                                                "test": {"acc1": 80.0, "acc5": 99.0}}))
    return d


def shown(items) -> str:
    c = Console(width=200, record=True, file=open("/dev/null", "w"))
    for item in items:
        c.print(item)
    return c.export_text()


def test_compare_warns_when_the_runs_were_tested_on_different_images(tmp_path):
    a = fake_run(tmp_path, "a", fingerprint="aa" * 32)
    b = fake_run(tmp_path, "b", fingerprint="bb" * 32, test_limit=500)
    diff, metrics = compare_runs(a, b)
    assert ("data_fingerprint", "aa" * 6, "bb" * 6) in diff and ("test_limit", 0, 500) in diff
    items = console.compare_tables("a", "b", diff, metrics)
    assert isinstance(items[-1], str) and items[-1].startswith("warning: A and B were not tested on the same")
    assert "test_limit 0 vs 500" in items[-1] and "data_fingerprint" in items[-1]
    c = fake_run(tmp_path, "c", fingerprint="aa" * 32, lr=0.1)
    same = console.compare_tables("a", "c", *compare_runs(a, c))
    assert len(same) == 2 and "warning" not in shown(same)


def test_report_of_a_sweep_folder_is_titled_sweep_with_its_table_and_plot(tmp_path):
    from PIL import Image

    from sotakit.experiments.report import write_report
    sweep = tmp_path / "sw"
    (sweep / "runs").mkdir(parents=True)
    (sweep / "results.jsonl").write_text(json.dumps({
        "step": "lr=0.1", "seed": 0, "recipe_hash": "h", "run_dir": str(sweep / "runs" / "r0"), "acc1": 80.5,
        "acc5": 99.0, "ema_acc1": None, "wall_time_s": 3.0, "img_s": 100.0}) + "\n")
    (sweep / "sweep.md").write_text("| lr | n | Acc@1 mean ± std |\n|---|---|---|\n"
                                    "| 0.1 | 1 | 80.50 (n = 1) |\n")
    (sweep / "sweep.csv").write_text("lr,n,acc1_mean\n0.1,1,80.5\n")
    Image.new("RGB", (8, 8)).save(sweep / "sweep.png")
    html = write_report(sweep).read_text()
    assert "<title>Sweep sw</title>" in html and "Ablation" not in html
    assert "<h2>Sweep table</h2>" in html and "80.50 (n = 1)" in html
    assert "<h2>Accuracy over the grid</h2>" in html and 'alt="sweep plot"' in html


def test_one_epoch_curves_plot_the_step_records_and_their_lr(tmp_path):
    from sotakit.train.rundir import curves_figure
    (tmp_path / "recipe.toml").write_text(dump_recipe(make_recipe(batch_size=10)))
    steps = [{"kind": "step", "epoch": 0, "step": s, "loss": 2.0 / s, "acc1": 10.0 * s, "lr": 0.01 * s,
              "img_s": 1.0} for s in (2, 4, 6, 8, 10)]
    epoch = {"kind": "epoch", "epoch": 0, "lr": 0.1, "train_n": 100, "train_loss": 0.5, "train_acc1": 50.0,
             "val_loss": 0.6, "val_acc1": 40.0, "val_split": "test"}
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*steps, epoch]))
    loss, _, lr = curves_figure(tmp_path).axes
    per_step = loss.lines[0]
    assert list(per_step.get_xdata()) == [0.2, 0.4, 0.6, 0.8, 1.0]  # epoch + step / 10 steps per epoch
    assert list(lr.lines[0].get_ydata()) == [0.02, 0.04, 0.06, 0.08, 0.1]
    assert loss.lines[1].get_markersize() >= 10  # one epoch: a large marker, not a dot
    # metrics.jsonl counts epochs from 0; the console and the plot from 1 (epoch 0 ends at 1)
    from sotakit.train.fit import epoch_line
    assert epoch_line({**epoch, "val_acc5": 90.0, "train_img_s": 1.0, "train_epoch_time": 1.0},
                      epochs=3).startswith("epoch 1/3 ")
    assert list(loss.lines[1].get_xdata()) == [1]


def test_jobs_share_the_cores_and_never_exceed_a_set_omp_num_threads(monkeypatch):
    from sotakit.experiments import runner
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [runner.job_threads(j) for j in (1, 2, 3, 16)] == [8, 4, 2, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert [runner.job_threads(j) for j in (1, 2, 4)] == [3, 3, 2]
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # unset in effect; a malformed value is torch's to reject
    assert runner.job_threads(2) == 4


def test_a_field_at_its_default_leaves_the_config_key_as_it_was(monkeypatch):
    """An upgrade that adds a field (at a default keeping the old behaviour) must not re-run an
    experiment's finished runs: the key of a recipe equals the key the version without the field gave."""
    from sotakit.experiments import config_key
    from sotakit.recipes.recipe import Recipe
    recipe = make_recipe(data="fashion-mnist", lr=0.3)
    now = config_key(recipe)
    full = Recipe.to_dict
    monkeypatch.setattr(Recipe, "to_dict", lambda self: {k: v for k, v in full(self).items()
                                                          if k != "pca_jitter"})  # the version before it
    assert config_key(recipe) == now
    monkeypatch.undo()
    assert now != config_key(make_recipe(data="fashion-mnist", lr=0.3, pca_jitter=0.1))
    assert now != config_key(make_recipe(data="fashion-mnist", lr=0.2))
