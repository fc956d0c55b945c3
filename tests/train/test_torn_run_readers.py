"""`eval`, `report` and `export-weights` read a run like resume does: a torn checkpoint-last.pt with a
torn manifest costs one checkpoint (checkpoint-prev.pt is used, with a note), not the run."""

from __future__ import annotations

import logging
import shutil

import torch

from sotakit.train.checkpoint import LAST, MANIFEST, PREV, load_checkpoint
from sotakit.train.evaluate_run import load_run
from sotakit.train.run_weights import export_run_weights


def torn_copy(run, tmp_path):
    dest = tmp_path / run.name
    shutil.copytree(run, dest)
    (dest / MANIFEST).write_text("\x00garbage{")
    last = dest / LAST
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])
    return dest


def test_eval_and_export_of_a_run_with_torn_last_and_manifest_use_the_previous_checkpoint(
        colour_run, tmp_path, caplog, one_thread):
    run_dir = torn_copy(colour_run, tmp_path)
    prev = load_checkpoint(run_dir / PREV)
    assert prev["epoch"] != load_checkpoint(colour_run / LAST)["epoch"]  # a different, earlier state
    with caplog.at_level(logging.WARNING, logger="sotakit"):
        loaded = load_run(run_dir)
    assert loaded.checkpoint == run_dir / PREV and loaded.ckpt["epoch"] == prev["epoch"]
    assert all(torch.equal(v, prev["model"][k]) for k, v in loaded.model.state_dict().items())
    assert f"using {PREV} instead" in caplog.text
    _, meta = export_run_weights(run_dir, out=tmp_path / "w.safetensors")
    assert meta["source"]["checkpoint"] == PREV and meta["source"]["epoch"] == prev["epoch"]
