"""The fastai-technique commands in real processes: lr-find, train --lr auto."""

from __future__ import annotations

import json

import pytest

from cli_runner import run_cli


@pytest.mark.slow
def test_lr_find_writes_plot_and_json_and_prints_the_suggestions(image_folder, tmp_path):
    out = tmp_path / "lrf"
    r = run_cli("lr-find", "--data", image_folder, "--model", "resnet9_w16", "-b", "8", "--steps", "30",
                "--end", "1", "-o", out, "--device", "cpu", "--workers", "0")
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "lr_find.json").read_text())
    assert set(doc["suggestions"]) >= {"valley", "minimum", "steep"} and len(doc["lrs"]) == 30
    assert f"valley {doc['suggestions']['valley']:.3g}" in r.stdout.splitlines()[0]
    assert (out / "lr_find.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_lr_auto_is_refused_on_resume_and_lr_find_under_torchrun(tmp_path):
    r = run_cli("train", "--resume", tmp_path, "--lr", "auto")
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: --lr auto chooses the lr of a new run; a resumed run keeps its own "
                                "(drop --lr)")
    r = run_cli("lr-find", "--data", tmp_path, env={"WORLD_SIZE": "2"})
    assert r.returncode == 2 and "error: lr-find runs on one process: run `sotakit lr-find` without " \
                                 "torchrun" in r.stderr


@pytest.mark.slow  # torchrun, 2 processes
def test_lr_auto_under_torchrun_runs_on_rank_0_and_every_rank_trains_at_it(image_folder, tmp_path):
    from sotakit.train import load_checkpoint
    r = run_cli("train", "--data", image_folder, "--model", "resnet9_w16", "--epochs", "1", "-b", "4",
                "--device", "cpu", "--workers", "0", "--output-dir", tmp_path, "--lr", "auto",
                torchrun=["--nproc_per_node=2"])
    assert r.returncode == 0, r.stdout + r.stderr
    run = next((tmp_path / "runs").iterdir())
    lr = load_checkpoint(run / "checkpoint-last.pt")["recipe"]["lr"]
    assert f"training at the valley, lr {lr:.4g}" in (run / "recipe.toml").read_text()
    assert r.stderr.count("--lr auto: lr-find over") == 1  # said once, by rank 0


def test_data_stats_prints_and_caches(image_folder, capsys):
    from sotakit.cli import main
    assert main(["data", "stats", "--data", str(image_folder), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["eigenvalues"]) == 3 and len(doc["eigenvectors"]) == 3 and doc["images"] == 36
    assert main(["data", "stats", "--data", str(image_folder)]) == 0
    out = capsys.readouterr().out
    first = f"{image_folder.name}: 36 training images, 36864 pixels (RGB, [0, 1]) [cached]"
    assert out.splitlines()[0] == first
    assert f"  mean ({', '.join(f'{m:.4f}' for m in doc['mean'])})" in out


@pytest.mark.slow  # a tiny fit(), then data show and interpret in-process
def test_data_show_and_interpret_write_their_files(image_folder, tmp_path, capsys, one_thread):
    from conftest import tiny_recipe
    from sotakit.cli import main
    from sotakit.train import fit
    grid = tmp_path / "grid.png"
    assert main(["data", "show", "--data", str(image_folder), "--mixup-alpha", "0.4", "-o", str(grid),
                 "--count", "8"]) == 0
    assert grid.read_bytes()[:4] == b"\x89PNG" and f"wrote {grid}" in capsys.readouterr().out
    run = fit(tiny_recipe(image_folder, tmp_path, epochs=1), verbose=False).run_dir
    assert main(["interpret", str(run), "--top", "4"]) == 0
    out = capsys.readouterr().out
    doc = json.loads((run / "interpret.json").read_text())
    assert len(doc["top_losses"]) == 4 and doc["images"] == 12
    losses = [t["loss"] for t in doc["top_losses"]]
    assert losses == sorted(losses, reverse=True)
    assert sum(n for _, _, n in doc["most_confused"]) == round(12 * (1 - doc["acc1"] / 100))
    assert out.startswith(f"model on 12 test images: acc@1 {doc['acc1']:.2f}")
    assert all((run / f).read_bytes()[:4] == b"\x89PNG" for f in ("confusion.png", "top_losses.png"))
