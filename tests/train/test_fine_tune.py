"""--freeze-epochs K: fastai's fine_tune schedule (reference section 2a), phase by phase."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import make_image_folder, tiny_recipe
from sotakit import fit
from sotakit.models import build_model
from sotakit.recipes import RecipeError, make_recipe
from sotakit.train import Interrupted, load_checkpoint
from sotakit.train.fine_tune import fine_tune_lr, layer_stages, one_cycle


def test_one_cycle_is_fastai_s_combined_cosine():
    assert one_cycle(0.0, lr_max=1.0, div=25, pct_start=0.25) == pytest.approx(1 / 25)
    assert one_cycle(0.25, lr_max=1.0, div=25, pct_start=0.25) == pytest.approx(1.0)
    assert one_cycle(0.125, lr_max=1.0, div=25, pct_start=0.25) == pytest.approx((1 / 25 + 1) / 2)
    assert one_cycle(1 - 1e-9, lr_max=1.0, div=25, pct_start=0.25) == pytest.approx(1e-5, rel=1e-3)


def test_fine_tune_lrs_per_phase_and_stage():
    lr, k, n = 2e-3, 10, 40  # 10 frozen steps of 40
    kw = dict(lr=lr, freeze_steps=k, total_steps=n)
    # phase 1, fit_one_cycle(K, slice(lr), pct_start=0.99): head from lr/25, frozen body 0, body norms lr/10
    assert fine_tune_lr(0, stage=2, norm=False, **kw) == pytest.approx(lr / 25)
    assert fine_tune_lr(5, stage=0, norm=False, **kw) == fine_tune_lr(5, stage=1, norm=False, **kw) == 0.0
    assert fine_tune_lr(0, stage=1, norm=True, **kw) == pytest.approx(lr / 10 / 25)
    pos = 9 / 10
    peak = lr / 25 + (1 + math.cos(math.pi * (1 - pos / 0.99))) * (lr - lr / 25) / 2
    assert fine_tune_lr(9, stage=2, norm=False, **kw) == pytest.approx(peak)
    # phase 2, base lr halved, fit_one_cycle(E, slice(b/100, b), pct_start=0.3, div=5): b/100, b/10, b
    b = lr / 2
    starts = [fine_tune_lr(k, stage=s, norm=False, **kw) for s in (0, 1, 2)]
    assert starts == pytest.approx([b / 100 / 5, b / 10 / 5, b / 5])
    top = k + round(0.3 * (n - k))  # step 19 of the 30 unfrozen ones is at pos 0.3
    assert fine_tune_lr(top, stage=2, norm=True, **kw) == pytest.approx(b)


def test_resnet_splits_as_fastai_resnet_split():
    model = build_model("resnet18", num_classes=7)
    stages = layer_stages(model, num_classes=7)
    got = {n.split(".")[0]: stages[id(p)] for n, p in model.named_parameters()}
    assert got == {"conv1": 0, "bn1": 0, "layer1": 0, "layer2": 0, "layer3": 1, "layer4": 1, "fc": 2}


def test_freeze_epochs_must_leave_an_unfrozen_epoch():
    with pytest.raises(RecipeError, match="freeze_epochs must be below epochs"):
        make_recipe(freeze_epochs=2, epochs=2)


def test_head_only_then_everything_and_resume_is_exact(colour_run, tmp_path, one_thread):
    data = make_image_folder(tmp_path / "new", classes=("cat", "dog", "owl"), per_class=(8, 2))
    kw = dict(weights=str(colour_run), freeze_epochs=1, epochs=2, use_deterministic_algorithms=True)
    start = load_checkpoint(colour_run)
    with pytest.raises(Interrupted):  # the end of the frozen epoch (3 steps of 8 images)
        fit(tiny_recipe(data, tmp_path / "a", **kw), verbose=False, stop_at=(0, 3))
    run = next((tmp_path / "a" / "runs").iterdir())
    frozen = load_checkpoint(run)["model"]
    body = [k for k, v in frozen.items() if v.is_floating_point() and v.ndim == 4]  # conv weights
    assert body and all(torch.equal(frozen[k], start["model"][k]) for k in body)
    head = next(k for k, v in frozen.items() if v.ndim == 2)
    assert not torch.equal(frozen[head][:2], start["model"][head][:2])  # the head trained
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r.get("kind") == "step"]
    assert steps and all(r["lr"] == 0.0 for r in steps)  # param group 0: early body, frozen
    resumed = fit(resume=run, verbose=False)
    full = fit(tiny_recipe(data, tmp_path / "b", **kw), verbose=False)
    a, b = load_checkpoint(resumed.run_dir)["model"], load_checkpoint(full.run_dir)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], start["model"][k]) for k in body)  # unfrozen in epoch 2


def test_a_model_without_a_classifier_of_that_size_is_refused():
    with pytest.raises(ValueError, match="no classifier layer with 10 outputs"):
        layer_stages(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 5)), num_classes=10)


def test_extending_a_fine_tune_run_keeps_its_schedule(colour_run, tmp_path, one_thread):
    data = make_image_folder(tmp_path / "new", classes=("cat", "dog", "owl"), per_class=(8, 2))
    run = fit(tiny_recipe(data, tmp_path, weights=str(colour_run), freeze_epochs=1, epochs=2),
              verbose=False).run_dir
    fit(resume=run, epochs=3, verbose=False)
    ckpt = load_checkpoint(run)
    lr = ckpt["recipe"]["lr"]
    assert ckpt["scheduler"]["last_epoch"] == 9  # 3 epochs of 3 steps, stepped per batch
    for g in ckpt["optimizer"]["param_groups"]:
        assert g["lr"] == pytest.approx(fine_tune_lr(9, stage=g["stage"], norm=g["norm"], lr=lr,
                                                     freeze_steps=3, total_steps=9))
