"""The helpers for a loop of your own: weighted means, the new-best condition across a resume, the logger's
lines, the checkpoint pair and progress that can be silenced."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sotakit import Checkpoints, MetricAggregator, MetricLogger, ProgressBars, improved, prefixed


def test_aggregator_gives_weighted_means_and_leaves_the_input_alone():
    agg = MetricAggregator()
    batch = {"loss": torch.tensor(2.0), "acc1": 50.0}
    assert agg(batch, n=3) is batch and set(batch) == {"loss", "acc1"}
    agg({"loss": 1.0, "acc1": 100.0}, n=1)
    assert agg.aggregate() == {"loss": pytest.approx(1.75), "acc1": pytest.approx(62.5)}
    agg.reset()
    assert agg.aggregate() == {}
    assert prefixed({"loss": torch.tensor(0.5)}, "val") == {"val.loss": 0.5}


def test_improved_keeps_its_best_and_says_which_metrics_exist():
    cond = improved("val.acc1")
    assert [cond({"val.acc1": v}) for v in (50, 40, 50, 60)] == [True, False, False, True]
    low = improved("val.loss", mode="min")
    assert [low({"val.loss": v}) for v in (1.0, float("nan"), 0.5, 0.7)] == [True, False, True, False]
    with pytest.raises(KeyError, match=r"improved\('val.acc1'\): no such metric among \['acc1'\]"):
        cond({"acc1": 1})


def test_checkpoints_resume_the_objects_the_rng_and_the_best_so_far(tmp_path):
    model, cond = nn.Linear(2, 2), improved("val.acc1")
    ck = Checkpoints(tmp_path, save_if=cond)
    assert ck.load_last(model=model) == 0  # nothing saved yet: start at epoch 0
    assert ck.save(0, {"val.acc1": 70.0}, model=model) is True
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    assert ck.save(1, {"val.acc1": 60.0}, model=model) is False
    with torch.no_grad():
        model.weight.zero_()
    torch.rand(5)
    fresh_cond = improved("val.acc1")
    again = Checkpoints(tmp_path, save_if=fresh_cond)
    assert again.load_last(model=model) == 2
    assert model.weight.abs().sum() > 0 and fresh_cond.best == 70.0
    assert torch.equal(torch.rand(2), expected)
    assert again.save(2, {"val.acc1": 65.0}, model=model) is False  # 65 < 70: not a new best after resume
    with pytest.raises(KeyError, match="holds no state for \\['optimizer'\\]"):
        again.load_last(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_metric_logger_writes_one_json_line_per_call(tmp_path):
    with MetricLogger(tmp_path) as log:
        log({"val.acc1": torch.tensor(12.5)}, step=3)
    line = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert line == {"kind": "epoch", "step": 3, "val.acc1": 12.5}


def test_progress_prints_a_line_per_epoch_without_a_terminal_and_nothing_when_off(capsys):
    for enabled in (True, False):
        bars = ProgressBars(enabled=enabled, live=False)
        for epoch in bars.epochs(range(2)):
            assert list(bars.steps([1, 2, 3])) == [1, 2, 3]
            bars.comment(f"acc {epoch}")
        out = capsys.readouterr().out
        assert out == ("epoch 0: acc 0\nepoch 1: acc 1\n" if enabled else "")
