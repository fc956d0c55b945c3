"""A training step waits for the device once (the non-finite check) and, under DDP, adds one collective
(that check and the stop request together); the metrics are read once per logging window."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from cli_runner import CHILD_ENV
from sotakit.train import train_one_epoch
from step_counts import Counts


def _counts(steps: int, print_freq: int) -> Counts:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    data = [(torch.randn(6, 4), torch.randint(0, 3, (6,))) for _ in range(steps)]
    with Counts() as counts:
        train_one_epoch(m, data, opt, criterion=nn.CrossEntropyLoss(), device=torch.device("cpu"), epoch=0,
                        print_freq=print_freq, on_log=lambda rec: None, should_stop=lambda done: False)
    return counts


def test_one_host_read_per_step_and_one_per_logging_window():
    # Three more steps: three more reads (the non-finite check); no collective without a process group.
    short, long = _counts(3, print_freq=1000), _counts(6, print_freq=1000)
    assert long.syncs - short.syncs == 3
    assert long.collectives == short.collectives == 0
    # A log line every 2 steps reads the window's sums once: 3 windows in 6 steps, 3 reads more.
    assert _counts(6, print_freq=2).syncs - long.syncs == 3


@pytest.mark.slow  # torchrun, 2 processes
def test_ddp_step_is_one_collective_and_every_rank_decides_alike(tmp_path):
    worker = Path(__file__).with_name("step_sync_worker.py")

    def job(name: str, steps: int, nan_at: int = -1, stop_at: int = -1) -> list[dict]:
        out = tmp_path / name
        out.mkdir()
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            "--nproc_per_node=2", str(worker), str(out), *map(str, (steps, nan_at, stop_at))],
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, **CHILD_ENV})
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        return [json.loads((out / f"rank{k}.json").read_text()) for k in (0, 1)]

    short, long = job("short", 3), job("long", 6)
    for a, b in zip(short, long):
        assert b["collectives"] - a["collectives"] == 3  # one all-reduce per step: the flags together
        assert b["syncs"] - a["syncs"] == 3  # one host read per step
    # The NaN on rank 1 alone skips that step on both ranks: the weights stay equal.
    nan = job("nan", 5, nan_at=2)
    assert [r["skipped"] for r in nan] == [1, 1] and nan[0]["weights"] == nan[1]["weights"]
    # A stop asked on rank 0 alone after step 2 stops both ranks there.
    stop = job("stop", 5, stop_at=2)
    assert [r["interrupted_at"] for r in stop] == [2, 2]
