"""What a checkpoint holds (its keys are pinned: runs started by older versions resume), and the saver
a loop of one's own calls."""

from __future__ import annotations

import torch
from torch import nn

from sotakit.train import CheckpointSaver, RunTotals, load_checkpoint, restore_state, training_state
from sotakit.train.checkpoint import LAST, read_manifest

# The checkpoint's keys since the first sotakit release; a resume reads every one of them.
CHECKPOINT_KEYS = {"model", "optimizer", "scheduler", "ema", "scaler", "epoch", "step_in_epoch", "best_acc1",
                   "train_time", "img_rates", "wall_time", "rng", "skipped_steps", "recipe", "recipe_hash",
                   "data_fingerprint", "classes", "native_size", "mean", "std"}
META = {"recipe": {"model": "toy"}, "recipe_hash": "0" * 16, "data_fingerprint": "f" * 16,
        "classes": ["a", "b"], "native_size": 8, "mean": [0.5] * 3, "std": [0.25] * 3}


def parts(seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return {"model": model, "optimizer": opt, "scheduler": torch.optim.lr_scheduler.StepLR(opt, 2),
            "ema": None, "scaler": None}


def step(p, n=1):
    for _ in range(n):
        loss = p["model"](torch.randn(4, 3)).square().mean()
        p["optimizer"].zero_grad()
        loss.backward()
        p["optimizer"].step()
        p["scheduler"].step()


def test_checkpoint_keys_are_pinned():
    state = training_state(parts(), RunTotals(), epoch=1, step=3, rngs=[{}], meta=META)
    assert set(state) == CHECKPOINT_KEYS


def test_restore_gives_back_state_and_totals():
    a = parts()
    step(a, 3)
    totals = RunTotals(epoch=2, step=5, best_acc1=71.5, train_time=12.0, img_rates=[100.0, 110.0],
                       wall_before=3.0, skipped_steps=1)
    from sotakit.train.checkpoint import rng_state
    saved = training_state(a, totals, epoch=2, step=5, rngs=[rng_state()], meta=META)
    b = parts(seed=1)
    got = restore_state(saved, b, say=lambda m: None)
    assert (got.epoch, got.step, got.best_acc1, got.train_time, got.img_rates, got.skipped_steps) == \
           (2, 5, 71.5, 12.0, [100.0, 110.0], 1)
    assert got.wall_before == saved["wall_time"] >= 3.0
    assert torch.equal(a["model"].weight, b["model"].weight)
    assert b["scheduler"].last_epoch == 3 and b["optimizer"].state_dict()["state"].keys() == {0, 1}


def test_saver_in_a_loop_of_ones_own(tmp_path):
    """Every 2 global steps and at each epoch end; the manifest records each save, the last holds the
    position."""
    p, totals = parts(), RunTotals()
    saver = CheckpointSaver(tmp_path, meta=META, steps_per_epoch=3, every_steps=2)
    for epoch in range(2):
        totals.start_epoch()
        for done in range(1, 4):
            step(p)
            saver.maybe_save(p, totals, epoch=epoch, step=done)
        totals.end_epoch({"epoch_time": 0.5, "img_s": 10.0, "skipped_steps": 0}, world_size=1)
        saver.save(p, totals, epoch=epoch + 1, step=0)
    # global steps 2 and 4 (epoch 1, step 1) mid-epoch; 3 and 6 are epoch ends
    # (step 3 = epoch end: no mid save)
    assert [(e["epoch"], e["step"]) for e in read_manifest(tmp_path)] == [(0, 2), (1, 0), (1, 1), (2, 0)]
    last = load_checkpoint(tmp_path / LAST)
    assert (last["epoch"], last["step_in_epoch"], last["train_time"]) == (2, 0, 1.0)
    assert torch.equal(last["model"]["weight"], p["model"].weight)
