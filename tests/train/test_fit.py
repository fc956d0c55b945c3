"""Tiny end-to-end runs: run directory contents, seeds, exact resume, eval, a real Fashion-MNIST subset."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_recipe
from sotakit.recipes import make_recipe
from sotakit.train import Interrupted, NonFiniteLossError, fit, load_checkpoint
from sotakit.train.evaluate_run import evaluate_checkpoint

pytestmark = pytest.mark.slow  # every test trains with fit()


def weights_of(run_dir):
    return load_checkpoint(run_dir / "checkpoint-last.pt")


def same_state(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_run_directory_contents(image_folder, tmp_path, one_thread):
    bad = image_folder / "train" / "cat" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    res = fit(tiny_recipe(image_folder, tmp_path, epochs=2, model_ema=True, model_ema_steps=1, holdout=0.25,
                          run_name="t"), verbose=False)
    d = res.run_dir
    assert d.parent == tmp_path / "runs" and d.name.endswith("-t")
    names = {p.name for p in d.iterdir()}
    assert {"recipe.toml", "metrics.jsonl", "summary.json", "curves.png", "checkpoint-last.pt",
            "checkpoint-best.pt", "data_report.csv", "weights.safetensors"} <= names
    assert "train/cat/broken.jpg,train,cat,excluded,truncated," in (d / "data_report.csv").read_text()
    records = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert {"train_loss", "train_acc1", "train_acc5", "lr", "train_img_s", "train_data_time",
            "train_epoch_time", "val_acc1", "ema_acc1", "val_ece", "val_nll", "val_brier"} <= set(epochs[0])
    assert epochs[0]["val_split"] == "holdout"
    steps = [r for r in records if r["kind"] == "step"]
    assert steps and {"loss", "acc1", "acc5", "lr", "img_s", "data_time"} <= set(steps[0])
    assert any(n.startswith("events.out.tfevents") for n in names)  # TensorBoard's run: the folder
    s = json.loads((d / "summary.json").read_text())
    assert s["holdout"]["n"] == 9 and s["test"]["n"] == 12  # 36 train images (3 classes x 12), 25% held out
    assert {"holdout_ema", "test_ema", "wall_time_s", "median_img_s"} <= set(s)
    assert {"python", "torch", "torchvision", "sotakit", "git_commit"} <= set(s["environment"])
    assert s["skipped_files"] == 1
    ck = weights_of(d)
    assert ck["epoch"] == 2 and ck["classes"] == ["cat", "dog", "fox"] and ck["ema"] is not None
    assert (d / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # the saved recipe is the resolved one: 32 px images use their native size
    assert "val_crop_size = 32" in (d / "recipe.toml").read_text()


def test_same_seed_same_weights_other_seed_differs(image_folder, tmp_path, one_thread):
    mix = dict(epochs=2, mixup_alpha=0.2, cutmix_alpha=1.0)
    a = weights_of(fit(tiny_recipe(image_folder, tmp_path / "a", **mix, channels_last=True),
                       verbose=False).run_dir)
    b = weights_of(fit(tiny_recipe(image_folder, tmp_path / "b", **mix, channels_last=True),
                       verbose=False).run_dir)
    c = weights_of(fit(tiny_recipe(image_folder, tmp_path / "c", **mix, seed=2), verbose=False).run_dir)
    assert same_state(a["model"], b["model"])
    assert not same_state(a["model"], c["model"])


@pytest.mark.parametrize("stop_at", [(0, 5), (1, 2)], ids=["after-epoch", "mid-epoch"])
def test_resume_is_bit_identical(image_folder, tmp_path, stop_at, one_thread):
    kw = dict(epochs=3, model_ema=True, model_ema_steps=2, auto_augment="ta_wide", random_erase=0.2,
              label_smoothing=0.1, mixup_alpha=0.2, lr_scheduler="cosineannealinglr", lr_warmup_epochs=1,
              lr_per_step=True, use_deterministic_algorithms=True)
    full = weights_of(fit(tiny_recipe(image_folder, tmp_path / "full", **kw), verbose=False).run_dir)
    with pytest.raises(Interrupted):
        fit(tiny_recipe(image_folder, tmp_path / "cut", **kw), verbose=False, stop_at=stop_at)
    run = next((tmp_path / "cut" / "runs").iterdir())
    partial = weights_of(run)
    # a stop at the last step (5 of 5: 36 images / 8, the last batch of 4 kept) ends the epoch first
    assert (partial["epoch"], partial["step_in_epoch"]) == ((1, 0) if stop_at == (0, 5) else stop_at)
    resumed = weights_of(fit(resume=run, verbose=False).run_dir)
    assert same_state(full["model"], resumed["model"])
    assert same_state(full["ema"], resumed["ema"])
    # totals survive the interruption: one throughput figure per epoch, train time of all sessions
    assert len(resumed["img_rates"]) == 3 and resumed["train_time"] >= partial["train_time"] > 0
    assert full["optimizer"]["state"][0]["momentum_buffer"].equal(
        resumed["optimizer"]["state"][0]["momentum_buffer"])


def test_non_finite_loss_stops_with_message_and_keeps_checkpoint(image_folder, tmp_path, one_thread):
    r = tiny_recipe(image_folder, tmp_path, epochs=3, lr=1e30, opt="sgd", momentum=0.0, max_nonfinite_skips=0)
    with pytest.raises(NonFiniteLossError, match=r"Lower --lr.* No checkpoint was written yet"):
        fit(r, verbose=False)


def test_eval_command_reports_model_and_ema(image_folder, tmp_path, one_thread):
    d = fit(tiny_recipe(image_folder, tmp_path, epochs=2, model_ema=True, model_ema_steps=1),
            verbose=False).run_dir
    out = evaluate_checkpoint(d)
    summary = json.loads((d / "summary.json").read_text())
    assert out["test"]["n"] == 12 and out["test_ema"]["n"] == 12
    best = load_checkpoint(d / "checkpoint-best.pt")
    if best["epoch"] == 2:  # best is the last epoch: same weights as the summary's final numbers
        assert out["test"]["acc1"] == pytest.approx(summary["test"]["acc1"])


def test_fashion_mnist_subset_learns(fmnist_root, tmp_path):
    r = make_recipe(data="fashion-mnist", data_root=str(fmnist_root), model="resnet9_w16", epochs=2,
                    batch_size=64, lr=0.1, opt="sgd-nesterov", weight_decay=5e-4, label_smoothing=0.1,
                    lr_scheduler="cosineannealinglr", lr_per_step=True, train_limit=1024, test_limit=512,
                    workers=0, output_dir=str(tmp_path), device="cpu", crop_min_scale=0.5)
    s = fit(r, verbose=False).summary
    assert s["test"]["n"] == 512
    assert s["test"]["acc1"] > 55.0  # chance is 10%; 2 short epochs on 1k images reach ~70%


@pytest.mark.parametrize("auto_augment", [None, "ta_wide"])
def test_resume_mid_epoch_on_in_memory_data_with_batch_crops(fmnist_root, tmp_path, auto_augment, one_thread):
    """Crop, flip, erasing and (ta_wide) the policy all on the batch path, each image's draws seeded by
    its own key."""
    kw = dict(data_root=str(fmnist_root), train_limit=256, test_limit=64, batch_size=32,
              epochs=2, crop_min_scale=0.5, mixup_alpha=0.2, cutmix_alpha=1.0, random_erase=0.5,
              auto_augment=auto_augment, use_deterministic_algorithms=True)
    full = weights_of(fit(tiny_recipe("fashion-mnist", tmp_path / "full", **kw), verbose=False).run_dir)
    with pytest.raises(Interrupted):
        fit(tiny_recipe("fashion-mnist", tmp_path / "cut", **kw), verbose=False, stop_at=(1, 3))
    resumed = weights_of(fit(resume=next((tmp_path / "cut" / "runs").iterdir()), verbose=False).run_dir)
    assert same_state(full["model"], resumed["model"])


def test_test_only_and_weights(image_folder, tmp_path, capsys, one_thread):
    from sotakit.cli import main
    d = fit(tiny_recipe(image_folder, tmp_path, epochs=1), verbose=False).run_dir
    ckpt = d / "checkpoint-last.pt"
    assert main(["train", "--test-only", "--weights", str(ckpt)]) == 0
    out = capsys.readouterr().out
    acc = json.loads((d / "summary.json").read_text())["test"]["acc1"]
    assert f"model      acc@1 {acc:.2f}" in out
    assert main(["train", "--test-only"]) == 2
    assert "--test-only needs --resume RUN_DIR or --weights FILE" in capsys.readouterr().err
    # --weights starts a new run from those weights: before any step, the model is the checkpoint's
    with pytest.raises(Interrupted):
        fit(tiny_recipe(image_folder, tmp_path / "ft", weights=str(ckpt), lr=1e-12, momentum=0.0,
                        weight_decay=0.0, epochs=2), verbose=False, stop_at=(0, 1))
    start = load_checkpoint(next((tmp_path / "ft" / "runs").iterdir()) / "checkpoint-last.pt")["model"]
    old = load_checkpoint(ckpt)["model"]
    for k, v in old.items():
        if v.is_floating_point() and "running" not in k:
            torch.testing.assert_close(start[k], v, atol=1e-6, rtol=0)


def test_checkpoint_every_n_steps_records_each_save_in_the_manifest(image_folder, tmp_path, one_thread):
    from sotakit.train.checkpoint import read_manifest
    # 36 images / batch 8 = 5 steps an epoch (the last one partial), 2 epochs; every 3 steps
    d = fit(tiny_recipe(image_folder, tmp_path, epochs=2, checkpoint_every="3"), verbose=False).run_dir
    saves = [(e["epoch"], e["step"]) for e in read_manifest(d)]
    # global steps 3, 6, 9 -> (0, 3), (1, 1), (1, 4); epoch ends -> (1, 0), (2, 0)
    assert saves == [(0, 3), (1, 0), (1, 1), (1, 4), (2, 0)]


def test_resume_refuses_changed_recipe_and_data_then_force_resume(image_folder, tmp_path, one_thread):
    from sotakit.train.fit import ResumeMismatchError
    with pytest.raises(Interrupted):
        fit(tiny_recipe(image_folder, tmp_path, epochs=3), verbose=False, stop_at=(1, 2))
    d = next((tmp_path / "runs").iterdir())
    toml = (d / "recipe.toml").read_text()
    (d / "recipe.toml").write_text(toml.replace("lr = 0.05", "lr = 0.1"))
    with pytest.raises(ResumeMismatchError, match=r"recipe hash: checkpoint \w+, now \w+ \(changed: lr 0.05 "
                                                  r"-> 0.1\)"):
        fit(resume=d, verbose=False)
    (d / "recipe.toml").write_text(toml)
    extra = image_folder / "train" / "cat" / "new.png"
    extra.write_bytes((image_folder / "train" / "cat" / "0.png").read_bytes())
    with pytest.raises(ResumeMismatchError,
                       match="data fingerprint: .*images, labels or classes changed") as e:
        fit(resume=d, verbose=False)
    assert "--force-resume" in str(e.value) and "recipe hash" not in str(e.value)
    r = fit(resume=d, verbose=False, force_resume=True)  # same model and classes: everything loads
    assert r.summary["epochs"] == 3 and load_checkpoint(d)["epoch"] == 3


def test_resume_drops_log_lines_written_after_the_checkpoint(image_folder, tmp_path, one_thread):
    from sotakit.train.rundir import read_metrics
    with pytest.raises(Interrupted):
        fit(tiny_recipe(image_folder, tmp_path, epochs=2, print_freq=1), verbose=False, stop_at=(1, 2))
    d = next((tmp_path / "runs").iterdir())
    with open(d / "metrics.jsonl", "a") as f:  # as if killed after logging steps 3 and 4
        f.write('{"kind": "step", "epoch": 1, "step": 3}\n{"kind": "step", "epoch": 1, "step": 4}\n')
    fit(resume=d, verbose=False)
    steps = [(r["epoch"], r["step"]) for r in read_metrics(d) if r["kind"] == "step"]
    assert steps == [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5)]
    assert [r["epoch"] for r in read_metrics(d) if r["kind"] == "epoch"] == [0, 1]


def test_resume_is_refused_while_another_process_trains_the_run(image_folder, tmp_path, one_thread):
    import subprocess
    import sys

    from sotakit.train.rundir import LOCK_FILE, RunBusyError
    with pytest.raises(Interrupted):
        fit(tiny_recipe(image_folder, tmp_path, epochs=2), verbose=False, stop_at=(0, 2))
    d = next((tmp_path / "runs").iterdir())
    # another process owning the run: it holds the run's lock and named itself in run.pid
    code = ("import fcntl, json, os, socket, sys, time; fd = os.open(sys.argv[1] + '/" + LOCK_FILE + "', "
            "os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); open(sys.argv[1] + '/run.pid', 'w').write("
            "json.dumps({'pid': os.getpid(), 'host': socket.gethostname()})); print('owned', flush=True); "
            "time.sleep(30)")
    other = subprocess.Popen([sys.executable, "-c", code, str(d)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "owned"
        with pytest.raises(RunBusyError, match=f"process {other.pid} on .* is training it"):
            fit(resume=d, verbose=False)
    finally:
        other.kill()
        other.wait()
    assert fit(resume=d, verbose=False).summary["epochs"] == 2  # the process is gone: resume goes on


def test_a_run_killed_before_its_first_checkpoint_starts_over_in_place(image_folder, tmp_path, one_thread):
    d = fit(tiny_recipe(image_folder, tmp_path, epochs=2), verbose=False).run_dir
    expected = json.loads((d / "summary.json").read_text())["state_fingerprint"]
    for name in ("checkpoint-last.pt", "checkpoint-prev.pt", "checkpoint-best.pt", "checkpoints.json",
                 "summary.json"):
        (d / name).unlink(missing_ok=True)
    again = fit(resume=d, verbose=False)
    assert again.run_dir == d and again.summary["state_fingerprint"] == expected
