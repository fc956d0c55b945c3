"""--compile: the training module is compiled, checkpoints and weights hold the plain model's state dict
(no ``_orig_mod.`` prefix), a compiled run resumes exactly, and compiling steps are left out of img/s.

The backend is aot_eager (dynamo and AOTAutograd, no C++ build): what wraps the module and names its
state is the same as with inductor, which takes a minute and more per run on a busy 2-core machine."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch

from conftest import tiny_recipe
from sotakit.train import Interrupted, fit, load_checkpoint

pytestmark = pytest.mark.slow  # three tiny compiled fit() runs


def test_a_compiled_run_saves_plain_state_dicts_and_resumes_exactly(image_folder, tmp_path, monkeypatch,
                                                                     one_thread):
    monkeypatch.setattr(torch, "compile", partial(torch.compile, backend="aot_eager"))
    kw = dict(epochs=2, compile=True, model_ema=True, model_ema_steps=1, use_deterministic_algorithms=True)
    full = fit(tiny_recipe(image_folder, tmp_path / "full", **kw), verbose=False).run_dir
    with pytest.raises(Interrupted):
        fit(tiny_recipe(image_folder, tmp_path / "cut", **kw), verbose=False, stop_at=(1, 2))
    run = next((tmp_path / "cut" / "runs").iterdir())
    cut = load_checkpoint(run / "checkpoint-last.pt")
    assert (cut["epoch"], cut["step_in_epoch"]) == (1, 2)
    resumed = fit(resume=run, verbose=False).run_dir
    a, b = load_checkpoint(full / "checkpoint-last.pt"), load_checkpoint(resumed / "checkpoint-last.pt")
    for ck in (cut, a, b):
        assert not [k for k in [*ck["model"], *ck["ema"]] if "_orig_mod." in k]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    from safetensors.torch import load_file
    assert not [k for k in load_file(full / "weights.safetensors") if "_orig_mod." in k]
    # The first epoch compiled: that time is reported apart and not counted as throughput.
    first = next(json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()
                 if json.loads(x)["kind"] == "epoch")
    assert 0 < first["train_compile_time"] < first["train_epoch_time"]
