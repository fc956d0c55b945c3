"""Checkpoints: atomic writes, safe loading, RNG state round trips."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from sotakit.train import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from sotakit.train.checkpoint import CheckpointError


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint({"x": torch.arange(3)}, path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(CheckpointError, match="could not write .*ck.pt: disk full"):
        save_checkpoint({"x": torch.arange(5)}, path)
    assert torch.equal(load_checkpoint(path)["x"], torch.arange(3))  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch MARKER",))


def test_loading_refuses_pickled_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": _Evil()}, f)
    with pytest.raises(RuntimeError, match="refused to load"):
        load_checkpoint(path)
    assert not (tmp_path / "MARKER").exists()


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    save_checkpoint({"rng": rng_state()}, tmp_path / "r.pt")
    expected = (torch.rand(3), random.random(), np.random.randn(2))
    torch.manual_seed(9), random.seed(9), np.random.seed(9)
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    got = (torch.rand(3), random.random(), np.random.randn(2))
    assert torch.equal(expected[0], got[0]) and expected[1] == got[1] and np.array_equal(expected[2], got[2])


def test_no_unsafe_loading_anywhere_in_the_source():
    import ast
    import pathlib

    import sotakit
    root = pathlib.Path(sotakit.__file__).parent
    offenders = []
    for f in root.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name = f"{getattr(node.func.value, 'id', '')}.{node.func.attr}"
                kw = {k.arg: k.value for k in node.keywords}
                if name == "torch.load" and not (isinstance(kw.get("weights_only"), ast.Constant)
                                                 and kw["weights_only"].value is True):
                    offenders.append(f"{f}:{node.lineno} torch.load without weights_only=True")
                if name in ("pickle.load", "pickle.loads"):
                    offenders.append(f"{f}:{node.lineno} {name}")
    assert offenders == []


def test_imports_point_one_way():
    """cli -> experiments -> train -> evaluate -> data, models; recipes a leaf (STYLE.md)."""
    import ast
    import pathlib

    import sotakit
    root = pathlib.Path(sotakit.__file__).parent
    allowed = {"recipes": set(), "data": set(), "models": set(), "evaluate": {"data", "models", "recipes"},
               "train": {"evaluate", "data", "models", "recipes"},
               "experiments": {"train", "evaluate", "data", "models", "recipes"}}
    wrong = []
    for pkg, ok in allowed.items():
        for f in (root / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level >= 2 and node.module:
                    target = node.module.split(".")[0]
                    if target not in ok and target != "__init__":
                        wrong.append(f"{f.relative_to(root)} imports {target}")
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("sotakit."):
                    target = node.module.split(".")[1]
                    if target != pkg and target not in ok:
                        wrong.append(f"{f.relative_to(root)} imports {target}")
    assert wrong == []
