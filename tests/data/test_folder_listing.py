"""Listing an image folder (issue 10): hidden folders, symlinks, names and empty classes."""

from __future__ import annotations

import logging
import os

import pytest

from sotakit.data.folder_index import list_classes, list_files, scan_folder


def test_hidden_folders_are_not_classes_and_broken_names_are_refused(tmp_path, caplog):
    for name in ("cat", "dog", ".ipynb_checkpoints", ".git"):
        (tmp_path / name).mkdir()
    with caplog.at_level(logging.INFO, logger="sotakit"):
        assert list_classes(tmp_path) == ["cat", "dog"]
    assert "skipped: .git, .ipynb_checkpoints" in caplog.text
    os.mkdir(os.fsencode(tmp_path) + b"/caf\xe9")
    with pytest.raises(ValueError, match=r"b'caf\\xe9' in .* not valid UTF-8: rename it"):
        list_classes(tmp_path)


def test_symlink_loops_and_dangling_links_become_excluded_rows(folder_factory, tmp_path):
    root = folder_factory(tmp_path / "d", classes=("cat", "dog"), per_class=(3, 1)) / "train"
    cat = root / "cat"
    (cat / "again").symlink_to(cat)  # a folder loop: walked once
    (cat / "x.png").symlink_to(cat / "y.png")
    (cat / "y.png").symlink_to(cat / "x.png")  # a file loop: ELOOP
    (cat / "gone.png").symlink_to(tmp_path / "nowhere.png")
    files = list_files(root, {"cat": 0, "dog": 1})
    assert len(files) == 3 + 3 + 3  # 3 images + 3 links in cat (the folder loop adds none), 3 in dog
    good, rows, _ = scan_folder(root, {"cat": 0, "dog": 1})
    bad = {r["path"]: r["detail"] for r in rows if r["status"] != "loaded"}
    assert len(good) == 6 and set(bad) == {"train/cat/x.png", "train/cat/y.png", "train/cat/gone.png"}
    assert bad["train/cat/gone.png"].startswith("dangling symlink") and "Errno 40" in bad["train/cat/x.png"]


def test_an_empty_class_folder_is_named_with_its_split(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"class folder .*train/cat \(train split\) is empty"):
        list_files(tmp_path / "train", {"cat": 0})
