"""The start-up machine probe: its decisions from faked CPU capabilities, its cache, the flags that
take a choice out of its hands, and a resume that keeps the stored choice on a machine that differs."""

from __future__ import annotations

import json
import shlex

import pytest
import torch
from torch import nn

from conftest import tiny_recipe
from sotakit.cli import build_recipe, make_parser
from sotakit.recipes import RecipeError, make_recipe
from sotakit.train import Interrupted, fit, load_checkpoint, machine
from sotakit.train.evaluate_run import evaluate_checkpoint
from sotakit.train.machine import MachineProbe, machine_choices, tune_for_machine

AMX = MachineProbe(cpu="fake AMX", native_bf16=True, channels_last_fp32=0.9, channels_last_bf16=1.3)
OLD = MachineProbe(cpu="fake AVX2", native_bf16=False, channels_last_fp32=0.9, channels_last_bf16=0.0)
BOTH = ("amp", "channels_last")


def choose(probe, allowed=BOTH, amp=False, amp_dtype="bfloat16", channels_last=False, conv_net=True):
    return machine_choices(probe, allowed=allowed, amp=amp, amp_dtype=amp_dtype, channels_last=channels_last,
                           conv_net=conv_net)


def test_native_bf16_switches_on_amp_and_the_bf16_channels_last_gain_decides_the_format():
    changes, note = choose(AMX)
    assert changes == {"amp": True, "channels_last": True}
    assert "native bf16: --amp" in note and "channels-last 1.30x" in note
    assert "--no-amp / --no-channels-last" in note
    # float32 (no native bf16, or amp left to the user and off): the float32 gain of 0.9x keeps NCHW
    assert choose(OLD) == ({}, "machine probe (fake AVX2): no native bf16: float32; channels-last kept off "
                               "(0.90x on a conv block)")
    assert choose(AMX, allowed=("channels_last",))[0] == {}
    # what the recipe already switched on stays, and is not a decision of the probe
    assert choose(AMX, amp=True, channels_last=True) == ({}, "")
    assert choose(AMX, amp=True, allowed=("channels_last",))[0] == {"channels_last": True}
    assert choose(AMX, conv_net=False)[0] == {"amp": True}  # a ViT's one patch conv: the format stays
    assert choose(AMX, amp_dtype="float16")[0] == {}  # CPU autocast is bf16 only


def test_the_probe_runs_once_per_machine_and_is_read_from_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    monkeypatch.setattr(machine, "measure", lambda bf16: calls.append(bf16) or (1.1, 1.2 if bf16 else 0.0))
    monkeypatch.setattr(machine, "native_bf16", lambda: True)
    first, cached = machine.probe_machine()
    assert not cached and first.native_bf16 and first.channels_last_bf16 == 1.2
    again, cached = machine.probe_machine()
    assert cached and again == first and calls == [True]
    assert len(list((tmp_path / "sotakit" / "machine").glob("*.json"))) == 1


def test_the_probe_measures_without_moving_the_random_stream():
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    fp32, bf16 = machine.measure(bf16=machine.native_bf16())
    assert torch.equal(torch.rand(3), expected) and fp32 > 0


def test_no_probe_on_cuda_with_the_env_off_or_with_nothing_allowed(monkeypatch):
    monkeypatch.delenv("SOTAKIT_PROBE")
    monkeypatch.setattr(machine, "probe_machine", lambda **kw: pytest.fail("probed"))
    convnet = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
    r = make_recipe(device="cuda")
    assert tune_for_machine(r, model=convnet, device=torch.device("cuda")) == (r, None)
    r = make_recipe(device="cpu", machine_probe="none")
    assert tune_for_machine(r, model=convnet, device=torch.device("cpu")) == (r, None)
    monkeypatch.setenv("SOTAKIT_PROBE", "off")
    r = make_recipe(device="cpu")
    assert tune_for_machine(r, model=convnet, device=torch.device("cpu")) == (r, None)


def _parse(cmd: str):
    parser, _ = make_parser()
    return build_recipe(parser.parse_args(["train", *shlex.split(cmd)]))


def test_a_typed_flag_either_way_takes_its_choice_from_the_probe():
    assert _parse("").machine_probe == "amp,channels_last"
    assert _parse("--no-amp").machine_probe == "channels_last"
    no_cl = _parse("--amp --no-channels-last")
    assert (no_cl.machine_probe, no_cl.amp, no_cl.channels_last) == ("none", True, False)
    assert _parse("--no-amp --machine-probe amp").machine_probe == "amp"  # said outright: as said
    with pytest.raises(RecipeError, match="machine_probe='threads'.*amp, channels_last, or 'none'"):
        make_recipe(machine_probe="threads")


@pytest.mark.slow  # three tiny fit() runs, in bf16
def test_the_probe_choice_is_stored_and_a_resume_keeps_it_on_a_machine_without_bf16(
        image_folder, tmp_path, monkeypatch, one_thread):
    monkeypatch.delenv("SOTAKIT_PROBE")
    monkeypatch.setattr(machine, "probe_machine", lambda **kw: (AMX, True))
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU cannot run bf16 autocast")
    kw = dict(epochs=2, use_deterministic_algorithms=True)
    full = fit(tiny_recipe(image_folder, tmp_path / "full", **kw), verbose=False).run_dir
    text = (full / "recipe.toml").read_text()
    assert "amp = true" in text and "channels_last = true" in text and "machine probe (fake AMX)" in text
    # `sotakit eval` evaluates in the run's precision: the recorded figures
    recorded = json.loads((full / "summary.json").read_text())["test"]
    again = evaluate_checkpoint(full)["test"]
    assert [again[k] for k in ("acc1", "loss", "ece")] == [recorded[k] for k in ("acc1", "loss", "ece")]
    with pytest.raises(Interrupted):
        fit(tiny_recipe(image_folder, tmp_path / "cut", **kw), verbose=False, stop_at=(1, 2))
    run = next((tmp_path / "cut" / "runs").iterdir())
    monkeypatch.setattr(machine, "probe_machine", lambda **kw: (OLD, True))  # "another machine"
    resumed = fit(resume=run, verbose=False).run_dir
    assert "amp = true" in (resumed / "recipe.toml").read_text()
    a, b = load_checkpoint(full / "checkpoint-last.pt"), load_checkpoint(resumed / "checkpoint-last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
