"""examples/own_loop.py (stopped and resumed equals uninterrupted) and examples/lr_find.py, on tiny data."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from sotakit.train import load_checkpoint

EXAMPLES = Path(__file__).parents[1] / "examples"


def example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_examples_stay_short():
    assert len((EXAMPLES / "own_loop.py").read_text().splitlines()) <= 100


@pytest.mark.slow  # three tiny runs of the example loop
def test_own_loop_stopped_and_resumed_equals_an_uninterrupted_run(image_folder, tmp_path, capsys, one_thread):
    loop = example("own_loop")
    common = ["--data", str(image_folder), "--epochs", "3", "--batch-size", "8", "--train-limit", "0"]
    loop.main([*common, "--out", str(tmp_path / "full")])
    loop.main([*common, "--out", str(tmp_path / "cut"), "--stop-after", "2"])
    assert "stopped after epoch 1" in capsys.readouterr().out
    loop.main([*common, "--out", str(tmp_path / "cut")])
    assert "resuming at epoch 2" in capsys.readouterr().out
    full, cut = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in ("full", "cut"))
    assert cut["epoch"] == full["epoch"] == 2
    assert all(torch.equal(v, cut["objects"]["model"][k]) for k, v in full["objects"]["model"].items())
    records = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    accs = [r["val.acc1"] for r in records]
    best = load_checkpoint(tmp_path / "cut" / "checkpoints" / "best.pt")
    assert best["epoch"] == accs.index(max(accs))  # the first epoch reaching the best accuracy


@pytest.mark.slow
def test_lr_find_example_prints_the_suggestion_and_trains_at_it(image_folder, capsys, one_thread):
    example("lr_find").main(["--data", str(image_folder), "--epochs", "1", "--batch-size", "8",
                             "--train-limit", "0", "--steps", "20"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("lr-find over 20 steps") and "valley" in out[0]
    valley = float(out[0].split("valley ")[1].split(",")[0])
    assert out[1].startswith(f"epoch 0: lr {valley:.3g}, test acc@1 ")
