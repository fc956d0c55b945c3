"""Two "nodes" on one machine: ``torchrun --nnodes 2 --nproc_per_node 1`` twice, meeting in a c10d
rendezvous on 127.0.0.1, as a multi-node job does (README "Distributed"): exact evaluation, files from
rank 0 only, and a relaunch after one node is killed mid-epoch continuing to the uninterrupted result."""

from __future__ import annotations

import json

import pytest

from cli_runner import run_nodes
from sotakit.train import load_checkpoint

pytestmark = pytest.mark.slow  # three two-node jobs


def _only_run(out):
    runs = list((out / "runs").iterdir())
    assert len(runs) == 1, runs  # rank 0 alone writes
    return runs[0]


def _summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_two_nodes_over_loopback_evaluate_exactly_and_resume_after_a_node_is_killed(image_folder, tmp_path):
    # 36 training images, batch 2 on each of 2 ranks: 9 steps an epoch; a checkpoint every 2 steps
    args = ["train", "--data", image_folder, "--model", "resnet9_w16", "--epochs", "2", "-b", "2",
            "--device", "cpu", "--print-freq", "1", "--checkpoint-every", "2", "--dist-timeout", "30"]
    ref = run_nodes(*args, "--output-dir", tmp_path / "ref")
    assert [rc for rc, _ in ref] == [0, 0], ref
    full = _only_run(tmp_path / "ref")
    s = _summary(full)
    assert s["world_size"] == 2 and s["test"]["n"] == 12  # each test image counted exactly once
    assert len(load_checkpoint(full / "checkpoint-last.pt")["rng"]) == 2  # both ranks' RNG states

    # The node whose rank is 1 dies after global step 5 (SIGKILL); the other fails on its next collective.
    cut = run_nodes(*args, "--output-dir", tmp_path / "cut", fault="kill_at:5",
                    env={"SOTAKIT_FAULT_RANK": "1"})
    assert all(rc != 0 for rc, _ in cut), cut
    run = _only_run(tmp_path / "cut")
    ck = load_checkpoint(run / "checkpoint-last.pt")
    assert (ck["epoch"], ck["step_in_epoch"]) == (0, 4)  # the last checkpoint before the kill
    # Both nodes relaunched with --resume: the run ends as the uninterrupted one did.
    again = run_nodes("train", "--resume", run)
    assert [rc for rc, _ in again] == [0, 0], again
    assert _summary(run)["state_fingerprint"] == s["state_fingerprint"]
