"""--tracker: the recipe and every logged record reach MLflow / W&B (fake modules record the calls)."""

from __future__ import annotations

import json
import sys
import types

import pytest

from conftest import tiny_recipe
from sotakit.cli import main
from sotakit.train import fit


def fake_mlflow(calls: list) -> types.ModuleType:
    m = types.ModuleType("mlflow")
    m.start_run = lambda **kw: calls.append(("start_run", kw))
    m.log_params = lambda params: calls.append(("log_params", params))
    m.log_metrics = lambda metrics, step: calls.append(("log_metrics", metrics, step))
    m.end_run = lambda: calls.append(("end_run",))
    return m


def fake_wandb(calls: list) -> types.ModuleType:
    m = types.ModuleType("wandb")

    class Run:
        def log(self, metrics, step):
            calls.append(("log", metrics, step))

        def finish(self):
            calls.append(("finish",))

    def init(**kw):
        calls.append(("init", kw))
        return Run()

    m.init = init
    return m


@pytest.mark.slow
def test_mlflow_gets_the_recipe_and_every_record(image_folder, tmp_path, monkeypatch, one_thread):
    calls = []
    monkeypatch.setitem(sys.modules, "mlflow", fake_mlflow(calls))
    res = fit(tiny_recipe(image_folder, tmp_path, run_name="tracked"), verbose=False, tracker="mlflow")
    assert calls[0] == ("start_run", {"run_name": res.run_dir.name}) and calls[-1] == ("end_run",)
    params = calls[1][1]
    assert calls[1][0] == "log_params" and params["model"] == "resnet9_w16" and params["lr"] == 0.05
    records = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [c for c in calls if c[0] == "log_metrics"]
    assert len(logged) == len(records)  # one call per metrics.jsonl line
    epoch = next(r for r in records if r["kind"] == "epoch")
    last = logged[-1]
    assert last[1]["epoch/val_acc1"] == epoch["val_acc1"] and last[1]["epoch/lr"] == epoch["lr"]
    # the step is TensorBoard's global step: after epoch 1 of 5 steps (36 images, batches of 8)
    assert "epoch/epoch" not in last[1] and last[2] == 5


@pytest.mark.slow
def test_wandb_runs_offline_in_the_run_directory(image_folder, tmp_path, monkeypatch, one_thread):
    calls = []
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(calls))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    res = fit(tiny_recipe(image_folder, tmp_path, run_name="tracked"), verbose=False, tracker="wandb")
    init = calls[0][1]
    assert init["mode"] == "offline" and init["dir"] == str(res.run_dir) and init["config"]["seed"] == 1
    assert calls[-1] == ("finish",) and any(c[0] == "log" and "epoch/val_acc1" in c[1] for c in calls)


def test_missing_package_names_the_install_command(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    code = main(["train", "--tracker", "mlflow", "--data", str(tmp_path), "--epochs", "1"])
    assert code == 2 and "pip install mlflow" in capsys.readouterr().err
