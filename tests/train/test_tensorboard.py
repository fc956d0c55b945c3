"""TensorBoard: `tensorboard --logdir runs` names each run by its folder, and the final test metrics
(plain and EMA) and the recipe reach the run's own event file (Scalars and the HParams tab)."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from conftest import tiny_recipe
from sotakit.train import fit
from sotakit.train.rundir import final_scalars, hparam_values


def test_final_scalars_and_hparam_values():
    final = {"test": {"loss": 1.5, "acc1": 50.0, "acc5": None, "n": 12}, "test_ema": {"acc1": 25.0, "n": 12}}
    assert final_scalars(final) == {"final/test_loss": 1.5, "final/test_acc1": 50.0,
                                    "final/test_ema_acc1": 25.0}
    assert hparam_values({"lr": 0.1, "epochs": 3, "model": "r", "amp": False, "clip": None, "x": [1, 2]}) == {
        "lr": 0.1, "epochs": 3, "model": "r", "amp": False, "clip": "None", "x": "[1, 2]"}


@pytest.mark.slow
def test_runs_are_named_by_folder_and_hold_the_final_metrics_and_hparams(image_folder, tmp_path, one_thread):
    res = fit(tiny_recipe(image_folder, tmp_path, run_name="tb", model_ema=True, model_ema_steps=1),
              verbose=False)
    summary = json.loads((res.run_dir / "summary.json").read_text())

    runs = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "runs")).Runs()
    assert list(runs) == [res.run_dir.name]  # not "<run>/tensorboard"

    acc = EventAccumulator(str(res.run_dir)).Reload()
    steps = 5  # one epoch of 36 images in batches of 8
    for tag, value in (("final/test_acc1", summary["test"]["acc1"]),
                       ("final/test_ema_acc1", summary["test_ema"]["acc1"]),
                       ("final/test_loss", summary["test"]["loss"])):
        (event,) = acc.Scalars(tag)
        assert event.value == pytest.approx(value, abs=1e-4) and event.step == steps
    assert acc.Scalars("epoch/val_acc1")[-1].step == steps  # the per-epoch curves are there as before

    content = acc.PluginTagToContent("hparams")
    data = {tag: HParamsPluginData.FromString(raw) for tag, raw in content.items()}
    session = next(d.session_start_info for d in data.values() if d.HasField("session_start_info"))
    assert session.hparams["lr"].number_value == 0.05
    assert session.hparams["model"].string_value == "resnet9_w16"
    assert session.hparams["model_ema"].number_value == 1  # torch writes a bool as a number
    assert session.hparams["clip_grad_norm"].string_value == "None"  # an unset field, as text
    experiment = next(d.experiment for d in data.values() if d.HasField("experiment"))
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"final/test_acc1", "final/test_ema_acc1"} <= metrics
