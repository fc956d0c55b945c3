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


def choose(probe, allowed=BOTH, amp=False, amp_dtype="bfloat16", channels_last=False, conv_net=True, **kw):
    return machine_choices(probe, allowed=allowed, amp=amp, amp_dtype=amp_dtype, channels_last=channels_last,
                           conv_net=conv_net, **kw)


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


def test_a_model_that_is_slower_under_bf16_keeps_float32_and_its_format_follows():
    """Native bf16 is not enough: resnet18 at 32 px ran slower under bf16 on an AMX Xeon (issue 14)."""
    changes, note = choose(AMX, bf16_gain=0.9, model_label="resnet18 at 32 px")
    assert changes == {}  # float32, and float32's channels-last gain (0.9x) keeps NCHW
    assert "native bf16, but resnet18 at 32 px trains 0.90x as fast under bf16 autocast: float32" in note
    assert "channels-last kept off (0.90x on a conv block)" in note
    faster = MachineProbe(cpu="fake", native_bf16=True, channels_last_fp32=1.2, channels_last_bf16=1.3)
    assert choose(faster, bf16_gain=1.04)[0] == {"channels_last": True}  # under BF16_GAIN: not worth it
    changes, note = choose(AMX, bf16_gain=1.4, model_label="resnet9_w16 at 28 px")
    assert changes == {"amp": True, "channels_last": True}
    assert "native bf16, 1.40x on resnet9_w16 at 28 px: --amp" in note


def test_the_model_check_is_cached_per_machine_model_and_input(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    monkeypatch.setattr(machine, "measure_model", lambda model, **kw: calls.append(kw["size"]) or 0.8)
    small = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
    strided = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.Conv2d(4, 4, 3, padding=1))  # another stem
    kw = dict(name="net", fp32_channels_last=False, bf16_channels_last=True)
    assert machine.model_bf16_gain(AMX, small, size=32, **kw) == (0.8, False)
    assert machine.model_bf16_gain(AMX, small, size=32, **kw) == (0.8, True)
    machine.model_bf16_gain(AMX, small, size=64, **kw)
    machine.model_bf16_gain(AMX, strided, size=32, **kw)
    assert calls == [32, 64, 32]


def test_the_model_check_leaves_the_model_the_random_stream_and_threads_alone():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = torch.rand(2)
    torch.manual_seed(5)
    nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    threads = torch.get_num_threads()
    gain = machine.measure_model(model, size=16, fp32_channels_last=False, bf16_channels_last=True)
    assert gain > 0 and torch.equal(torch.rand(2), expected) and torch.get_num_threads() == threads
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included
    assert all(p.grad is None for p in model.parameters())
    assert model[0].weight.is_contiguous()  # the run's model keeps its memory format


def test_tune_for_machine_times_the_runs_model_before_it_switches_bf16_on(monkeypatch):
    monkeypatch.delenv("SOTAKIT_PROBE")
    monkeypatch.setattr(machine, "probe_machine", lambda **kw: (AMX, True))
    seen = []
    monkeypatch.setattr(machine, "model_bf16_gain", lambda probe, model, **kw: seen.append(kw) or (0.9, True))
    convnet = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
    r = make_recipe(device="cpu", model="resnet18", train_crop_size=32)
    tuned, note = tune_for_machine(r, model=convnet, device=torch.device("cpu"))
    assert tuned == r and "resnet18 at 32 px trains 0.90x as fast under bf16 autocast: float32" in note
    # each precision timed in the format the probe would give it: AMX's 0.9x fp32 and 1.3x bf16 gains
    assert seen == [dict(name="resnet18", size=32, fp32_channels_last=False, bf16_channels_last=True)]
    seen.clear()
    tune_for_machine(r.replace(amp=True), model=convnet, device=torch.device("cpu"))
    assert seen == []  # bf16 already chosen by the recipe: nothing to decide, nothing timed


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
    monkeypatch.setattr(machine, "model_bf16_gain", lambda probe, model, **kw: (1.3, True))
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
