"""Weights files: what a finished run writes, the meta schema, the API (transforms, build_model, load_model,
the named registry) and the refusals."""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
import sys

import pytest
import torch
from PIL import Image

import sotakit
from sotakit.evaluate.weights import (
    REQUIRED_KEYS,
    WeightsError,
    encode_file,
    gflops,
    mib,
    read_meta,
    schema_problems,
    write_weights,
)
from sotakit.models import build_meta_model, count_flops
from sotakit.train.evaluate_run import load_run, run_loaders
from sotakit.train.run_weights import choose_model, export_run_weights


def header_of(path) -> dict:
    """The safetensors header: 8-byte little-endian length, then JSON (no pickle anywhere)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n])


def test_finished_run_writes_weights_with_its_meta(colour_run):
    path = colour_run / "weights.safetensors"
    header = header_of(path)
    meta = read_meta(path)
    assert REQUIRED_KEYS <= meta.keys()
    assert json.loads(header["__metadata__"]["categories"]) == ["cat", "dog", "fox"]
    tensors = {k for k in header if k != "__metadata__"}
    assert tensors == set(torch.load(colour_run / "checkpoint-last.pt", weights_only=True)["model"])
    summary = json.loads((colour_run / "summary.json").read_text())
    chosen = "ema" if summary["holdout_ema"]["acc1"] > summary["holdout"]["acc1"] else "plain"
    assert meta["model_choice"]["model"] == chosen and meta["model_choice"]["chosen_on"] == "holdout"
    suffix = "_ema" if chosen == "ema" else ""
    assert meta["_metrics"]["imgs"]["test"]["acc@1"] == summary[f"test{suffix}"]["acc1"]
    assert meta["_metrics"]["imgs"]["holdout"]["n"] == summary["holdout"]["n"] == 12
    recipe = meta["recipe"]
    assert meta["preprocessing"] == {"resize_size": recipe["val_resize_size"],
                                     "crop_size": recipe["val_crop_size"], "interpolation": "bilinear",
                                     "antialias": True, "mean": [0.485, 0.456, 0.406],
                                     "std": [0.229, 0.224, 0.225], "channels": 3}
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["_file_size"] == mib(path.stat().st_size)
    model = build_meta_model(meta["arch"], **meta["builder_args"])
    assert meta["num_params"] == sum(p.numel() for p in model.parameters())
    assert meta["_ops"] == gflops(count_flops(model, recipe["val_crop_size"]))
    assert schema_problems(path) == []


def test_choice_without_holdout_is_the_plain_model_and_says_so():
    summary = {"test": {"acc1": 50.0}, "test_ema": {"acc1": 90.0}}
    c = choose_model(summary, has_ema=True)
    assert c == {"model": "plain", "chosen_on": None,
                 "reason": "no holdout split: the final plain model, not chosen on test data"}
    c = choose_model({"holdout": {"acc1": 70.0}, "holdout_ema": {"acc1": 70.5}}, has_ema=True)
    assert (c["model"], c["chosen_on"]) == ("ema", "holdout")
    with pytest.raises(ValueError, match="no EMA model"):
        choose_model(summary, has_ema=False, which="ema")


def test_export_weights_plain_and_ema_differ_and_pass_the_schema(colour_run, tmp_path):
    ema, meta_e = export_run_weights(colour_run, out=tmp_path / "ema.safetensors", which="ema")
    plain, meta_p = export_run_weights(colour_run, out=tmp_path / "plain.safetensors", which="plain")
    assert meta_e["model_choice"]["model"] == "ema" and meta_p["model_choice"]["model"] == "plain"
    assert meta_e["tensors_sha256"] != meta_p["tensors_sha256"]
    ckpt = torch.load(colour_run / "checkpoint-last.pt", weights_only=True)
    w = sotakit.Weights.from_file(ema)
    head = [k for k in ckpt["model"] if k.endswith("weight")][-1]
    assert torch.equal(w.get_state_dict()[head], ckpt["ema"][f"module.{head}"])
    assert schema_problems(ema) == schema_problems(plain) == []  # and the conftest check runs over both


def test_schema_test_finds_wrong_counts_and_sizes(colour_run, tmp_path):
    meta = read_meta(colour_run / "weights.safetensors")
    state = sotakit.Weights.from_file(colour_run / "weights.safetensors").get_state_dict()
    bad = tmp_path / "counts.tampered.safetensors"
    write_weights(bad, state, {**meta, "num_params": meta["num_params"] + 1, "_ops": meta["_ops"] * 2,
                               "colour": "blue"})
    problems = schema_problems(bad)
    assert f"num_params {meta['num_params'] + 1} but the model has {meta['num_params']}" in problems
    assert f"_ops {meta['_ops'] * 2} but the model computes {meta['_ops']} GFLOPs" in problems
    assert "unsupported keys: colour" in problems
    data = encode_file(state, meta)
    size = json.dumps(mib(len(data)))
    wrong = size[:-1] + ("1" if size[-1] != "1" else "2")  # same length: the header keeps its size
    edited = tmp_path / "size.tampered.safetensors"
    edited.write_bytes(data.replace(f'"_file_size":"{size}"'.encode(), f'"_file_size":"{wrong}"'.encode(), 1))
    assert f"_file_size {float(wrong)} MiB but the file has {mib(len(data))}" in schema_problems(edited)


def test_transforms_give_exactly_what_the_eval_loader_feeds_the_model(colour_run):
    w = sotakit.Weights.from_file(colour_run / "weights.safetensors")
    run = load_run(colour_run)
    loaders = run_loaders(run.recipe, run.bundle)
    batch, _ = next(iter(loaders.test))
    ds = loaders.test.dataset
    first_file = ds.source.samples[ds.indices[0]][0]
    with Image.open(first_file) as im:
        x = w.transforms()(im.convert("RGB"))
    assert x.dtype == torch.float32 and torch.equal(x, batch[0])


def test_one_channel_transforms_match_the_loader_for_tensor_and_rgb_input():
    from conftest import tensor_bundle
    from sotakit.data import make_loaders, make_preprocess_transform
    bundle = tensor_bundle(n=8, size=12, test=8)
    loaders = make_loaders(bundle, batch_size=8, train_crop_size=12, val_resize_size=14, val_crop_size=12)
    batch, _ = next(iter(loaders.test))
    tf = make_preprocess_transform(resize_size=14, crop_size=12, mean=bundle.mean, std=bundle.std, channels=1)
    image = bundle.test.images[0]
    assert torch.equal(tf(image), batch[0])
    rgb = Image.fromarray(image[0].numpy()).convert("RGB")  # how read_image hands a grayscale file over
    assert torch.equal(tf(rgb), batch[0])


@pytest.mark.slow
def test_the_seed_snippet_works_as_written(colour_run, tmp_path):
    # torchvision's snippet from the blog post (seed 000), with sotakit's names, on a new red image.
    Image.new("RGB", (40, 36), (200, 20, 30)).save(tmp_path / "red.png")
    code = f"""
from PIL import Image
import sotakit
img = Image.open({str(tmp_path / 'red.png')!r})
weights = sotakit.Weights.from_file({str(colour_run / 'weights.safetensors')!r})
model = sotakit.build_model(weights.meta["arch"], weights=weights)
model.eval()
preprocess = weights.transforms()
batch = preprocess(img).unsqueeze(0)
prediction = model(batch).squeeze(0).softmax(0)
label = prediction.argmax().item()
score = prediction[label].item()
category_name = weights.meta['categories'][label]
print(f"{{category_name}}: {{100 * score}}%")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    name, score = out.stdout.strip().split(": ")
    assert name == "cat" and 100 / 3 < float(score.rstrip("%")) <= 100


@pytest.mark.slow
def test_registry_by_name_in_a_fresh_process(colour_run, tmp_path, monkeypatch):
    monkeypatch.setenv("SOTAKIT_HOME", str(tmp_path / "home"))
    from sotakit.evaluate.weights_registry import add_weights, list_registered, remove_weights
    dest = add_weights("colours-v1", colour_run)
    assert dest == tmp_path / "home" / "weights" / "colours-v1.safetensors"
    assert [n for n, _ in list_registered()] == ["colours-v1"]
    code = ("import sotakit, torch; m = sotakit.build_model('resnet9_w16', weights='colours-v1').eval(); "
            "model, w = sotakit.load_model('colours-v1'); x = torch.rand(2, 3, 32, 32); "
            "print(w.name, m(x).shape[1], torch.equal(m(x), model(x)), model.training)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.stdout.split() == ["colours-v1", "3", "True", "False"], out.stderr
    with pytest.raises(ValueError, match="exist already"):
        add_weights("colours-v1", colour_run)
    remove_weights("colours-v1")
    with pytest.raises(FileNotFoundError, match="registered name"):
        sotakit.build_model("resnet9_w16", weights="colours-v1")
    with pytest.raises(ValueError, match=r"no weights named 'colours-v1' .* \(registered: none\)"):
        remove_weights("colours-v1")


def test_registry_home_follows_xdg(monkeypatch, tmp_path):
    from sotakit.evaluate.weights_registry import sotakit_home
    monkeypatch.delenv("SOTAKIT_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert sotakit_home() == tmp_path / "data" / "sotakit"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert sotakit_home() == tmp_path / ".local" / "share" / "sotakit"


def test_refusals_name_the_reason(colour_run, tmp_path):
    src = colour_run / "weights.safetensors"
    meta = read_meta(src)
    state = sotakit.Weights.from_file(src).get_state_dict()
    # 1. hash mismatch: one byte of the last tensor flipped
    damaged = tmp_path / "bytes.tampered.safetensors"
    data = bytearray(src.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="do not match their SHA-256.*export it again"):
        sotakit.build_model(weights=damaged)
    # 2. unknown architecture
    unknown = tmp_path / "arch.tampered.safetensors"
    unknown.write_bytes(encode_file(state, {**meta, "arch": "resnet9_w99"}))
    with pytest.raises(WeightsError, match="'resnet9_w99' model, an architecture this sotakit does not know"):
        sotakit.load_model(unknown)
    # 3. tensors that do not fit the model (another head size)
    misfit = tmp_path / "misfit.tampered.safetensors"
    head = next(k for k, v in state.items() if v.ndim == 2)  # the classifier: the only linear layer
    write_weights(misfit, {**state, head: torch.zeros(5, state[head].shape[1])}, meta)
    with pytest.raises(WeightsError, match=rf"do not fit this model: 1 tensors differ in shape \({head}"):
        sotakit.load_model(misfit)
    # 4. another architecture asked for
    with pytest.raises(WeightsError, match="holds a 'resnet9_w16' model, not 'resnet18'"):
        sotakit.build_model("resnet18", weights=src)
    # 5. a checkpoint is not a weights file
    with pytest.raises(WeightsError, match="not a safetensors weights file.*export-weights"):
        sotakit.Weights.from_file(colour_run / "checkpoint-last.pt")


@pytest.mark.slow
def test_cli_export_weights_and_registry(colour_run, tmp_path):
    from cli_runner import run_cli
    env = {"SOTAKIT_HOME": str(tmp_path / "home")}
    out = run_cli("export-weights", colour_run, "--ema", "-o", tmp_path / "c.safetensors", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"weights: {tmp_path / 'c.safetensors'} (")
    assert "model: ema (--ema asked for)" in out.stdout
    out = run_cli("weights", "add", "colours", tmp_path / "c.safetensors", env=env)
    assert out.stdout.strip() == f"added colours: {tmp_path / 'home' / 'weights' / 'colours.safetensors'}"
    out = run_cli("weights", "list", env=env)
    assert "colours" in out.stdout and "resnet9_w16" in out.stdout
    out = run_cli("weights", "remove", "nope", env=env)
    assert out.returncode == 2 and out.stderr.startswith("error: no weights named 'nope'")
    assert "Traceback" not in out.stderr
    shutil.copy(colour_run / "checkpoint-last.pt", tmp_path / "ck.pt")
    out = run_cli("weights", "add", "x", tmp_path / "ck.pt", env=env)
    assert out.returncode == 2 and "not a safetensors weights file" in out.stderr
    assert "Traceback" not in out.stderr


def test_predicted_probabilities_are_a_distribution(colour_run):
    model, w = sotakit.load_model(colour_run)
    x = torch.stack([w.transforms()(Image.new("RGB", (32, 32), c)) for c in ((200, 0, 0), (0, 200, 0))])
    p = model(x).softmax(1)
    assert torch.allclose(p.sum(1), torch.ones(2)) and math.isclose(w.temperature, 1.0)


def test_min_size_is_the_smallest_input_the_model_takes():
    from sotakit.evaluate.weights import min_input_size
    assert min_input_size("resnet50", {"num_classes": 10}) == [1, 1]
    assert min_input_size("vit_b_16", {"num_classes": 10}) == [224, 224]  # fixed to its image size


def test_eval_of_a_weights_file_gives_its_recorded_test_metrics(colour_run):
    from sotakit.train.evaluate_run import evaluate_checkpoint
    path = colour_run / "weights.safetensors"
    out = evaluate_checkpoint(path)
    recorded = read_meta(path)["_metrics"]["imgs"]["test"]
    assert out["checkpoint"] == str(path) and "test_ema" not in out
    assert (out["test"]["acc1"], out["test"]["n"]) == (recorded["acc@1"], recorded["n"])
    assert out["test"]["ece"] == pytest.approx(recorded["ece"])
