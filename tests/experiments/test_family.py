"""Model families (issue 12): `train --model PATTERN --seeds N` runs each match over seeds, resumably, and
tabulates params, FLOPs, accuracy mean ± std, time and speed."""

from __future__ import annotations

import json
import math

import pytest

from sotakit.cli import main
from sotakit.experiments import config_key, runner
from sotakit.experiments.family import expand_family, is_family, match_models, write_family
from sotakit.models import build_meta_model, count_flops, count_parameters
from sotakit.recipes import RecipeError, dump_recipe, load_recipe, make_recipe


def test_patterns_and_lists_name_the_models():
    assert match_models("regnetx_00*") == ["regnetx_002", "regnetx_004", "regnetx_006", "regnetx_008"]
    assert match_models("regnety_002, regnetx_00[24],regnety_002") == ["regnety_002", "regnetx_002",
                                                                        "regnetx_004"]
    with pytest.raises(RecipeError, match="--model 'regnetz_\\*' matches no model; `sotakit models"):
        match_models("regnetz_*")
    assert is_family("regnet*") and is_family("a,b") and not is_family("regnetx_002")


def fake_run_one(accs: dict):
    """runner.run_one writing a run directory with the resolved recipe.toml (32 px crop), no training."""
    def run_one(path, seed, out_dir, threads, fold=None, tracker=None):
        recipe = load_recipe(path)
        run_dir = out_dir / "runs" / f"{path.stem}-s{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "recipe.toml").write_text(dump_recipe(make_recipe(recipe, val_crop_size=32, seed=seed)))
        acc = accs[(recipe.model, seed)]
        return {"step": path.stem, "seed": seed, "fold": fold, "recipe_hash": config_key(recipe),
                "run_dir": str(run_dir), "acc1": acc, "acc5": 100.0, "ema_acc1": None, "ema_acc5": None,
                "wall_time_s": 5.0, "train_time_s": 2.0 + seed, "img_s": 100.0 * (seed + 1)}
    return run_one


def test_family_command_runs_resumably_and_writes_the_table(tmp_path, image_folder, monkeypatch, capsys):
    accs = {("regnetx_002", 0): 70.0, ("regnetx_002", 1): 72.0, ("regnety_002", 0): 80.0,
            ("regnety_002", 1): 81.0}
    monkeypatch.setattr(runner, "run_one", fake_run_one(accs))
    out = tmp_path / "fam"
    argv = ["train", "--model", "regnety_002,regnetx_002", "--seeds", "2", "--data", str(image_folder),
            "--out", str(out), "--no-estimate", "--epochs", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 models x 2 seeds = 4 runs" in printed and "family.png" in printed
    recipes = sorted(p.name for p in (out / "points").iterdir())
    assert recipes == ["model-regnetx_002.toml", "model-regnety_002.toml"]
    model = build_meta_model("regnetx_002", num_classes=3, small_input=True)  # 3 classes, 32 px images
    params, flops = count_parameters(model), count_flops(model, 32)
    lines = (out / "family.md").read_text().splitlines()
    assert lines[2] == (f"| regnetx_002 | {params / 1e6:.2f} | {flops / 1e9:.3f} | 2 | 71.00 ± 1.41 | "
                        "100.00 ± 0.00 | 2 | 150 |")  # by FLOPs: X before Y; time and img/s mean over seeds
    assert lines[3].startswith("| regnety_002 |") and "80.50 ± 0.71" in lines[3]
    csv = (out / "family.csv").read_text().splitlines()
    assert csv[1].startswith(f"regnetx_002,{params},{flops},32,2,71.0000,{math.sqrt(2):.4f},")
    assert (out / "family.png").stat().st_size > 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    monkeypatch.setattr(runner, "run_one", lambda *a, **k: pytest.fail("a finished run was repeated"))
    assert main(argv) == 0  # resumed: every run is recorded, nothing trains again
    assert "0 runs to do, 4 already finished" in capsys.readouterr().err


def test_family_refuses_the_flags_it_sets_itself(image_folder, capsys):
    assert main(["train", "--model", "regnetx_00*", "--seed", "3", "--data", str(image_folder)]) == 2
    assert capsys.readouterr().err.strip() == ("error: a model family sets --seed itself (seeds 0..N-1 with "
                                                "--seeds N, runs under --out); drop it")


def test_jobs_or_out_without_a_family_is_refused_not_ignored(image_folder, capsys):
    assert main(["train", "--model", "resnet18", "--jobs", "2", "--data", str(image_folder)]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --jobs and --out are for a model family: give --model PATTERN (or a comma list) or --seeds N;"
        " one run goes under --output-dir")


def test_family_rows_are_sorted_by_flops(tmp_path, image_folder):
    base = make_recipe(data=str(image_folder), epochs=1)
    entries = expand_family(base, ["regnety_004", "regnetx_002"], tmp_path)
    with open(tmp_path / "results.jsonl", "w") as f:
        for name, _, path in entries:
            run_dir, recipe = tmp_path / "runs" / name, load_recipe(path)
            run_dir.mkdir(parents=True)
            (run_dir / "recipe.toml").write_text(dump_recipe(make_recipe(recipe, val_crop_size=32)))
            f.write(json.dumps({"step": name, "seed": 0, "recipe_hash": config_key(recipe),
                                "run_dir": str(run_dir), "acc1": 50.0, "acc5": None, "ema_acc1": None})
                    + "\n")
    rows, text = write_family(entries, tmp_path)
    assert [r.model for r in rows] == ["regnetx_002", "regnety_004"]
    assert "| regnetx_002 |" in text and "| 1 | 50.00 (n = 1) | - | - | - |" in text


def test_children_get_the_tracker(tmp_path):
    """The seed's "automate the tracking": with --tracker every run of the family logs to it."""
    seen = []

    class FakeChildren:  # the runner's Children: records the command instead of starting it
        signum = None

        def run(self, cmd, env):
            seen.append(cmd)
            return runner.subprocess.CompletedProcess(cmd, 1, "", "boom")

    path = tmp_path / "r.toml"
    path.write_text(dump_recipe(make_recipe(model="regnetx_002")))
    with pytest.raises(RuntimeError, match="exit 1"):
        runner.run_one(path, 0, tmp_path, threads=1, tracker="mlflow", children=FakeChildren())
    assert seen[0][-2:] == ["--tracker", "mlflow"]
