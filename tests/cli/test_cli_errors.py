"""Issue 9 points 5 and 7: a failure a user can cause ends in an `error:` or `note:` line, no traceback."""

from __future__ import annotations

import pytest
import torch

from cli_runner import run_cli
from conftest import make_image_folder
from sotakit.models import build_model


@pytest.mark.slow
def test_a_model_too_large_for_the_images_fails_before_the_run(fmnist_root, tmp_path):
    r = run_cli("train", "--model", "vit_b_16", "--epochs", "1", "--train-limit", "200",
                "--data-root", fmnist_root.parent, "--output-dir", tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1] == (
        "error: vit_b_16 needs 224x224 inputs, not 28x28 (AssertionError: Wrong image height! Expected 224 "
        "but got 28!); choose a model that runs at 28 px: `sotakit models --data fashion-mnist` lists them")
    assert not (tmp_path / "runs").exists()  # no run folder for `runs` to list as failed


@pytest.mark.slow
def test_weights_of_another_model_say_so(image_folder, tmp_path):
    # (weights for other classes are transferred since issue 13: tests/train/test_transfer.py)
    weights = tmp_path / "r18.pt"
    torch.save(build_model("resnet18", num_classes=3).state_dict(), weights)
    r = run_cli("train", "--data", image_folder, "--model", "resnet9_w16", "--weights", weights,
                "--epochs", "1", "--device", "cpu", "--output-dir", tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --weights {weights} do not fit this model: ")
    assert last.endswith("; was it saved from another --model?")


@pytest.mark.slow
def test_a_failed_sweep_run_is_an_error_line_naming_it(image_folder, tmp_path):
    r = run_cli("sweep", "--recipe", "fashion-mnist-demo", "--grid", "model=vit_b_16", "--data", image_folder,
                "--seeds", "1", "--epochs", "1", "--out", tmp_path / "sw")  # one run, failing at once
    assert r.returncode == 1
    first = next(line for line in r.stderr.splitlines() if line.startswith("error:"))
    assert first == (f"error: 1 run(s) failed; re-run the same command to retry only them (finished runs are "
                     f"kept in {tmp_path / 'sw' / 'results.jsonl'}): model-vit_b_16 seed 0")
    assert "vit_b_16 needs 224x224 inputs" in r.stderr  # the child's own error line, not a traceback
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_ablate_dry_run_on_a_small_folder_shows_the_plan_without_an_estimate(tmp_path):
    folder = make_image_folder(tmp_path / "photos", per_class=(27, 4))  # 81 training images
    r = run_cli("ablate", "--ladder", "torchvision", "--data", folder, "--seeds", "2", "--epochs", "1",
                "--dry-run", "--out", tmp_path / "ab")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "steps x 2 seeds" in r.stdout
    assert "note: no time estimate: too few training images to time 10 steps of batch" in r.stderr
    assert "agents" not in r.stdout + r.stderr
