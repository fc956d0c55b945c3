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
                    if target not in ok and target not in ("__init__", "faults"):  # faults: stdlib leaf
                        wrong.append(f"{f.relative_to(root)} imports {target}")
                if (isinstance(node, ast.ImportFrom) and node.level == 0
                        and (node.module or "").startswith("sotakit.")):
                    target = node.module.split(".")[1]
                    if target != pkg and target not in ok and target != "faults":
                        wrong.append(f"{f.relative_to(root)} imports {target}")
    assert wrong == []


def _saved(tmp_path, n, step):
    from sotakit.train.checkpoint import LAST
    save_checkpoint({"x": torch.full((4,), float(n))}, tmp_path / LAST, keep_previous=True,
                    meta={"epoch": 0, "step": step})


def test_previous_checkpoint_is_kept_and_manifest_vouches_for_both(tmp_path):
    from sotakit.train.checkpoint import PREV, choose_checkpoint, file_sha256, read_manifest
    _saved(tmp_path, 1, 4)
    _saved(tmp_path, 2, 8)
    assert load_checkpoint(tmp_path / PREV)["x"][0] == 1 and load_checkpoint(tmp_path)["x"][0] == 2
    entries = read_manifest(tmp_path)
    assert [(e["step"], e["sha256"]) for e in entries] == [(4, file_sha256(tmp_path / PREV)),
                                                          (8, file_sha256(tmp_path / "checkpoint-last.pt"))]
    assert choose_checkpoint(tmp_path).name == "checkpoint-last.pt"


def test_a_damaged_last_checkpoint_falls_back_to_the_verified_previous(tmp_path):
    from sotakit.train.checkpoint import PREV, CheckpointError, choose_checkpoint
    _saved(tmp_path, 1, 4)
    _saved(tmp_path, 2, 8)
    last = tmp_path / "checkpoint-last.pt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    last.write_bytes(bytes(data))
    assert choose_checkpoint(tmp_path) == tmp_path / PREV
    assert load_checkpoint(tmp_path)["x"][0] == 1
    (tmp_path / PREV).write_bytes(b"torn")
    with pytest.raises(CheckpointError, match="no checkpoint in .* matches its manifest"):
        choose_checkpoint(tmp_path)


def test_stale_temp_files_are_removed_and_only_ours(tmp_path):
    from sotakit.train.checkpoint import remove_stale_temps
    ours = tmp_path / ".checkpoint-checkpoint-last.abc123.tmp"
    theirs = tmp_path / "notes.tmp"
    ours.write_bytes(b"half a checkpoint")
    theirs.write_text("user file")
    assert remove_stale_temps(tmp_path) == [ours]
    assert not ours.exists() and theirs.exists()


def test_no_space_stops_before_writing_and_keeps_the_old_file(tmp_path, monkeypatch):
    from collections import namedtuple

    from sotakit.train import checkpoint as ck
    path = tmp_path / "ck.pt"
    save_checkpoint({"x": torch.arange(3)}, path)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(ck.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    # needed: (20,000 float32 = 80,000 bytes + 64 KiB overhead) x 1.1 margin = 0.15 MiB
    with pytest.raises(CheckpointError, match=r"not enough free space in .* for a checkpoint: about 0.2 MiB "
                                              r"needed, 0.0 MiB free"):
        save_checkpoint({"x": torch.zeros(20_000)}, path)
    assert torch.equal(load_checkpoint(path)["x"], torch.arange(3))


def test_a_state_with_a_nan_is_never_written(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}}, path)
    bad = {"model": {"w": torch.tensor([1.0, float("nan")])}, "optimizer": {"m": torch.ones(1)}}
    with pytest.raises(CheckpointError, match="non-finite values in model"):
        save_checkpoint(bad, path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))


def test_refusal_names_the_offending_global(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not allow: posix.system") as e:
        load_checkpoint(tmp_path / "evil.pt")
    assert "weights_only=False" not in str(e.value).replace("never loads with weights_only=False", "")
    assert not (tmp_path / "MARKER").exists()


def test_state_fingerprint_sees_one_changed_number():
    from sotakit.train.checkpoint import state_fingerprint
    a = {"model": {"w": torch.zeros(3), "n": torch.tensor(2)}, "optimizer": {"state": {}, "lr": 0.1},
         "ema": None}
    b = {"model": {"w": torch.zeros(3), "n": torch.tensor(2)}, "optimizer": {"state": {}, "lr": 0.1},
         "ema": None}
    assert state_fingerprint(a) == state_fingerprint(b)
    b["model"]["w"][1] = 1e-30
    assert state_fingerprint(a) != state_fingerprint(b)
