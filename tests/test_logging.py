"""Issue 9, "the logs people look at": results on stdout, notes and progress on stderr through the
"sotakit" logger (the CLI attaches the handler; -q: errors only), and library calls print nothing."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

from conftest import tiny_recipe
from sotakit.cli import main
from sotakit.data import load_data, make_loaders
from sotakit.data.folder_index import scan_folder
from sotakit.evaluate import evaluate
from sotakit.parsers import with_log_flags_first
from sotakit.train import progress as progress_mod
from sotakit.train import train_one_epoch
from sotakit.train.progress import TaskProgress


def _tiny_model(classes: int) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, classes))


def test_library_helpers_print_nothing(image_folder, capsys):
    bundle = load_data(str(image_folder))
    loaders = make_loaders(bundle, batch_size=8, workers=0, train_crop_size=16, val_resize_size=16,
                           val_crop_size=16)
    model = _tiny_model(len(bundle.classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_one_epoch(model, loaders.train, opt, criterion=nn.CrossEntropyLoss(), device="cpu", epoch=0)
    evaluate(model, loaders.test)
    assert capsys.readouterr() == ("", "")


def test_log_flags_after_the_subcommand_move_in_front():
    assert with_log_flags_first(["train", "-q", "--epochs", "1"]) == ["-q", "train", "--epochs", "1"]
    assert with_log_flags_first(["-v", "runs", "--", "-q"]) == ["-v", "runs", "--", "-q"]


def test_notes_go_to_stderr_and_quiet_silences_them(image_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", str(image_folder), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "note: no --recipe:" in err and "note:" not in out and "batch_size" in out
    assert main(["-q", "train", "--data", str(image_folder), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "batch_size" in out
    assert main(["train", "-q", "--data", str(image_folder), "--dry-run"]) == 0
    assert capsys.readouterr().err == ""
    assert not logging.getLogger("sotakit").handlers  # main() leaves the user's logging as it was


def test_plain_progress_lines_not_per_item(monkeypatch, caplog):
    clock = iter(float(t) for t in range(100))
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: next(clock))
    p = TaskProgress("indexing photos/train", unit="files")
    with caplog.at_level(logging.INFO, logger="sotakit"):
        for done in range(1, 41):
            p(done, 40)
    lines = [r.getMessage() for r in caplog.records]
    assert 2 <= len(lines) <= 11  # every 10% (or 10 s) and at the end, not 40
    assert lines[-1].startswith("indexing photos/train: files 40/40 (100%)") and "files/s" in lines[-1]
    assert "ETA" in lines[0]


def test_download_progress_in_bytes(caplog):
    p = TaskProgress("downloading fashion-mnist", unit="bytes")
    with caplog.at_level(logging.INFO, logger="sotakit"):
        p(1_000_000, 4_000_000)
        p(4_000_000, 4_000_000)
    assert "downloading fashion-mnist: 4.0 MB/4.0 MB (100%)" in caplog.records[-1].getMessage()
    assert "B/s, " in caplog.records[-1].getMessage()


def test_progress_is_silent_without_logging_configured(capsys):
    p = TaskProgress("evaluating", unit="batches")
    p(1, 1)
    assert capsys.readouterr() == ("", "")


def test_folder_scan_reports_files_per_second(image_folder, caplog):
    from sotakit.data.folder_index import list_classes
    class_to_idx = {c: i for i, c in enumerate(list_classes(image_folder / "train"))}
    with caplog.at_level(logging.INFO, logger="sotakit"):
        scan_folder(image_folder / "train", class_to_idx, progress=TaskProgress("indexing", unit="files"))
    assert any("files/s" in r.getMessage() and "indexing: files" in r.getMessage() for r in caplog.records)


def test_runner_reports_runs_done_of_total(tmp_path, monkeypatch, caplog):
    from sotakit.experiments import runner
    from sotakit.recipes import dump_recipe, make_recipe
    paths = []
    for name in ("a", "b"):
        p = tmp_path / f"{name}.toml"
        p.write_text(dump_recipe(make_recipe(data="fashion-mnist", lr=0.1 if name == "a" else 0.2)))
        paths.append((name, name, p))
    monkeypatch.setattr(progress_mod.time, "monotonic", iter(float(5 * t) for t in range(100)).__next__)
    monkeypatch.setattr(runner, "run_one", lambda path, seed, out_dir, threads, fold=None: {
        "step": path.stem, "seed": seed, "fold": fold, "recipe_hash": runner.config_key(make_recipe(
            **{"data": "fashion-mnist", "lr": 0.1 if path.stem == "a" else 0.2})), "acc1": 50.0, "acc5": None,
        "ema_acc1": None, "wall_time_s": 1.0})
    (tmp_path / "out").mkdir()
    with caplog.at_level(logging.INFO, logger="sotakit"):
        runner.run_recipes(paths, tmp_path / "out", seeds=2)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "out: runs 2/4 (50%)" in text and "ETA" in text and "runs 4/4 (100%)" in text


@pytest.mark.slow
def test_quiet_train_prints_only_the_results(image_folder, tmp_path, capsys):
    r = tiny_recipe(image_folder, tmp_path)
    args = ["-q", "train", "--data", r.data, "--model", r.model, "--epochs", "1", "-b", "8", "--workers", "0",
            "--device", "cpu", "--output-dir", str(tmp_path), "--print-freq", "1"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "test " in out and "step 1/" not in out and "run: " not in out
    assert main(args[1:]) == 0  # without -q: the banner, notes and step lines on stderr, results on stdout
    out, err = capsys.readouterr()
    assert "run: " in err and "step 1/" in err and "run: " not in out and "step 1/" not in out
    assert "test " in out


@pytest.mark.slow
def test_eval_reports_progress_and_json_stays_clean(image_folder, tmp_path, capsys):
    from sotakit.train import fit
    d = fit(tiny_recipe(image_folder, tmp_path), verbose=False).run_dir
    capsys.readouterr()
    assert main(["eval", str(d), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["test"]["n"] > 0
    assert "evaluating the model on test: batches" in err
