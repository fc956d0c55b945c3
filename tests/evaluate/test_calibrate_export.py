"""`sotakit calibrate` (holdout only, temperature into the weights meta) and `sotakit export` (ONNX
parity with onnxruntime, PT2)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import sotakit
from sotakit.evaluate.calibration import calibration_metrics, collect_logits, fit_temperature
from sotakit.evaluate.weights import read_meta
from sotakit.train.calibrate_run import calibrate_run
from sotakit.train.evaluate_run import load_run, run_loaders


def copy_run(run, tmp_path):
    dest = tmp_path / run.name
    shutil.copytree(run, dest)
    return dest


def test_calibrate_fits_on_holdout_and_stores_the_temperature(colour_run, tmp_path):
    run_dir = copy_run(colour_run, tmp_path)
    res = calibrate_run(run_dir)
    meta = read_meta(run_dir / "weights.safetensors")
    assert meta["temperature"] == res["temperature"]
    assert meta["calibration"]["fitted_on"] == "holdout" and meta["calibration"]["holdout_n"] == 12
    assert json.loads((run_dir / "calibration.json").read_text()) == res
    # the same fit by hand, on the holdout logits of the weights file's model
    run = load_run(run_dir)
    model = run.ema_model if meta["model_choice"]["model"] == "ema" else run.model
    loaders = run_loaders(run.recipe, run.bundle)
    logits, y = collect_logits(model, loaders.holdout)
    assert res["temperature"] == pytest.approx(fit_temperature(logits, y), rel=1e-6)
    test_logits, test_y = collect_logits(model, loaders.test)
    after = calibration_metrics(test_logits / res["temperature"], test_y)
    assert res["test_after"]["ece"] == pytest.approx(after["ece"])
    assert res["holdout_after"]["nll"] <= res["holdout_before"]["nll"] + 1e-9  # the fitted objective
    # predict applies it: the weights' temperature is the fitted one
    _, w = sotakit.load_model(run_dir)
    assert w.temperature == res["temperature"]
    # export-weights keeps it (the same model goes in)
    from sotakit.train.run_weights import export_run_weights
    _, again = export_run_weights(run_dir)
    assert again["temperature"] == res["temperature"]


def test_calibrate_refuses_a_run_without_holdout(tmp_path, image_folder, one_thread):
    from conftest import tiny_recipe
    run = sotakit.fit(tiny_recipe(image_folder, tmp_path), verbose=False).run_dir
    with pytest.raises(ValueError, match="has no holdout split, and the temperature is never fitted on test"):
        calibrate_run(run)


def test_pt2_export_matches_pytorch(colour_run, tmp_path):
    from sotakit.evaluate.export import export_model
    res = export_model(colour_run, format="pt2", out=tmp_path / "m.pt2")
    print(f"pt2 max abs diff {res['max_abs_diff']:.3g}")
    assert res["max_abs_diff"] <= 1e-4
    program = torch.export.load(tmp_path / "m.pt2")
    model, w = sotakit.load_model(colour_run)
    x = torch.randn(5, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(program.module()(x), model(x), atol=1e-4)


@pytest.mark.slow
def test_onnx_export_matches_onnxruntime_with_dynamic_batch(colour_run, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from sotakit.evaluate.export import export_model
    res = export_model(colour_run, format="onnx", out=tmp_path / "m.onnx")
    print(f"onnx max abs diff {res['max_abs_diff']:.3g}")
    assert res["max_abs_diff"] <= 1e-4
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    _, w = sotakit.load_model(colour_run)
    assert json.loads(props["sotakit.preprocessing"]) == w.meta["preprocessing"]
    assert json.loads(props["sotakit.categories"]) == ["cat", "dog", "fox"]
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    model, _ = sotakit.load_model(colour_run)
    x = torch.randn(7, 3, 32, 32)
    with torch.inference_mode():
        diff = (torch.from_numpy(session.run(None, {"images": x.numpy()})[0]) - model(x)).abs().max()
    assert diff <= 1e-4


def test_onnx_without_its_packages_names_them(colour_run, tmp_path, monkeypatch):
    import importlib.util

    from sotakit.evaluate import export
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnxscript" else real(n, *a))
    with pytest.raises(export.MissingPackageError,
                       match=r"ONNX export needs onnxscript: pip install 'sotakit\[export\]' "
                             r"\(or pip install onnxscript\)"):
        export.export_model(colour_run, format="onnx", out=tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
