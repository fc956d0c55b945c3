"""A finished run says so on resume; `--resume RUN --epochs N` extends it with a stated schedule rule."""

from __future__ import annotations

import json
import math
import tomllib

import pytest

from cli_runner import run_cli
from conftest import tiny_recipe
from sotakit.train import fit
from sotakit.train.rundir import read_metrics

pytestmark = pytest.mark.slow  # every test trains with fit()


def test_resuming_a_finished_run_says_so_and_exits_0_without_evaluating(image_folder, tmp_path):
    d = fit(tiny_recipe(image_folder, tmp_path, epochs=2, lr_scheduler="cosineannealinglr"),
            verbose=False).run_dir
    summary = (d / "summary.json").read_text()
    out = run_cli("train", "--resume", d, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"{d} is finished: all 2 epochs trained and evaluated" in out.stdout
    said = out.stdout + out.stderr
    assert "resuming " not in said and "epoch 3" not in said
    assert (d / "summary.json").read_text() == summary  # no re-evaluation, wall time as it was


def test_extending_a_finished_2_epoch_run_to_3_epochs_stretches_the_cosine(image_folder, tmp_path, capsys):
    lr = 0.05
    d = fit(tiny_recipe(image_folder, tmp_path, epochs=2, lr=lr, lr_scheduler="cosineannealinglr"),
            verbose=False).run_dir
    capsys.readouterr()
    r = fit(resume=d, epochs=3)
    out = capsys.readouterr().err  # notes go to stderr
    assert "--epochs 3 extends the run from 2 to 3 epochs" in out and "lr 0 -> 0.0125" in out
    epochs = [rec for rec in read_metrics(d) if rec["kind"] == "epoch"]
    assert [rec["epoch"] for rec in epochs] == [0, 1, 2]
    # Epochs 1-2 as trained (cosine over 2), epoch 3 at the 3-epoch cosine's third value.
    third = lr * (1 + math.cos(2 * math.pi / 3)) / 2
    assert [rec["lr"] for rec in epochs] == pytest.approx([lr, lr / 2, third])
    assert r.summary["epochs"] == 3 and (d / "summary-2-epochs.json").is_file()
    saved = tomllib.loads((d / "recipe.toml").read_text())
    assert saved["recipe"]["epochs"] == 3 and "extends the run from 2 to 3" in saved["meta"]["notes"]
    assert json.loads((d / "summary.json").read_text())["epochs"] == 3
    assert fit(resume=d, verbose=False).summary == r.summary  # finished again: the new length is the recipe's
