"""`train --kfold K`: K fits, each validating on its own fold, with per-fold and mean ± std output."""

from __future__ import annotations

import json
import statistics

import pytest

from sotakit.cli import main


@pytest.mark.slow
def test_train_kfold_runs_every_fold(image_folder, tmp_path, capsys, one_thread):
    code = main(["train", "--data", str(image_folder), "--model", "resnet9_w16", "--epochs", "1", "-b", "8",
                 "--device", "cpu", "--workers", "0", "--output-dir", str(tmp_path), "--kfold", "3",
                 "--run-name", "cv"])
    assert code == 0
    runs = sorted((tmp_path / "runs").iterdir())
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    assert [r.name.split("-")[-1] for r in runs] == ["fold0", "fold1", "fold2"]
    # 36 training images: each run validates on its 12-image fold; the 12 test images are evaluated apart
    assert all(s["holdout"]["n"] == 12 and s["test"]["n"] == 12 for s in summaries)
    val = [s["holdout"]["acc1"] for s in summaries]
    test = [s["test"]["acc1"] for s in summaries]
    out = capsys.readouterr().out
    row = (f"| cv (3-fold) | {val[0]:.2f} | {val[1]:.2f} | {val[2]:.2f} | "
           f"{statistics.fmean(val):.2f} ± {statistics.stdev(val):.2f} | 3 | "
           f"{statistics.fmean(test):.2f} ± {statistics.stdev(test):.2f} |")
    assert row in out
