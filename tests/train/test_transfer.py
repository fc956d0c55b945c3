"""--weights onto other classes: body loaded, head rebuilt, rows of same-named classes copied; the
reference script's checkpoint.pth and torchvision state dicts read with weights_only."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import PosixPath

import pytest
import torch

from conftest import make_image_folder, tiny_recipe
from sotakit import Weights, fit
from sotakit.models import build_model
from sotakit.train.checkpoint import CheckpointError
from sotakit.train.transfer import WeightsMismatchError, head_name, load_start_weights, read_start_weights


def test_head_rows_follow_the_class_names(colour_run):
    src = Weights.from_file(colour_run / "weights.safetensors")  # classes cat, dog, fox
    state = src.get_state_dict()
    torch.manual_seed(0)
    model = build_model("resnet9_w16", num_classes=4, small_input=True)
    head = head_name(model, 4)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_start_weights(model, colour_run, classes=["ant", "cat", "dog", "owl"])
    own = model.state_dict()
    w = f"{head}.weight"  # resnet9's head has no bias (the SqueezeNet test below has one)
    assert torch.equal(own[w][1], state[w][0]) and torch.equal(own[w][2], state[w][1])  # cat, dog
    assert torch.equal(own[w][0], fresh[w][0]) and torch.equal(own[w][3], fresh[w][3])  # ant, owl: as built
    body = [k for k in state if k != w]
    assert all(torch.equal(own[k], state[k]) for k in body)
    assert report == (f"--weights {colour_run} (sotakit weights): {len(body)} body tensors loaded; "
                      f"head {head} re-initialised for 4 classes (3 classes in the file, 4 here); rows "
                      "copied for 2 classes whose names match (cat, dog); new: ant, owl")


def test_same_classes_load_everything_and_another_model_is_refused(colour_run):
    model = build_model("resnet9_w16", num_classes=3, small_input=True)
    report = load_start_weights(model, colour_run / "weights.safetensors", classes=["cat", "dog", "fox"])
    assert report.endswith("(sotakit weights): all " f"{len(model.state_dict())} tensors loaded")
    other = build_model("resnet18", num_classes=3)
    with pytest.raises(WeightsMismatchError, match="do not fit this model: .* saved from another --model"):
        load_start_weights(other, colour_run, classes=["cat", "dog", "fox"])


def test_reference_checkpoint_with_its_args_namespace(tmp_path):
    torch.manual_seed(0)
    net = build_model("resnet9_w16", num_classes=10, small_input=True)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": net.state_dict(), "optimizer": {}, "lr_scheduler": {}, "epoch": 4,
                "args": argparse.Namespace(model="resnet9_w16", lr=0.5, data_path="/data")}, path)
    start = read_start_weights(path)
    assert start.kind == "TorchVision reference checkpoint" and start.classes is None
    model = build_model("resnet9_w16", num_classes=3, small_input=True)
    report = load_start_weights(model, path, classes=["a", "b", "c"])
    assert "head 11 re-initialised for 3 classes (the file names no classes)" in report
    assert report.endswith("rows copied for 0 classes whose names match (none); new: all")
    # any other global stays refused: here a PosixPath in args
    bad = tmp_path / "bad.pth"
    torch.save({"model": net.state_dict(), "args": argparse.Namespace(output_dir=PosixPath("/x"))}, bad)
    with pytest.raises(CheckpointError, match="pathlib.*PosixPath"):
        read_start_weights(bad)


def test_torchvision_state_dict_carries_imagenet_names_into_a_conv_head(tmp_path):
    torch.manual_seed(0)
    net = build_model("squeezenet1_1", num_classes=1000)
    path = tmp_path / "squeezenet1_1.pth"
    torch.save(net.state_dict(), path)
    model = build_model("squeezenet1_1", num_classes=3)
    assert head_name(model, 3) == "classifier.1"  # SqueezeNet's classifier is a 1x1 convolution
    report = load_start_weights(model, path, classes=["goldfish", "my cat", "tench"])
    own, src = model.state_dict(), net.state_dict()
    assert torch.equal(own["classifier.1.weight"][0], src["classifier.1.weight"][1])  # goldfish: ImageNet 1
    assert torch.equal(own["classifier.1.weight"][2], src["classifier.1.weight"][0])  # tench: ImageNet 0
    assert torch.equal(own["classifier.1.bias"][[0, 2]], src["classifier.1.bias"][[1, 0]])
    assert ("(1000 classes in the file, 3 here); rows copied for 2 classes whose names match "
            "(goldfish, tench); new: my cat") in report


def test_fine_tune_onto_partly_other_classes_reports_it(colour_run, tmp_path, one_thread):
    data = make_image_folder(tmp_path / "new", classes=("cat", "dog", "owl"), per_class=(8, 2))
    run = fit(tiny_recipe(data, tmp_path, weights=str(colour_run)), verbose=False).run_dir
    notes = tomllib.loads((run / "recipe.toml").read_text())["meta"]["notes"]
    assert "rows copied for 2 classes whose names match (cat, dog); new: owl" in notes
