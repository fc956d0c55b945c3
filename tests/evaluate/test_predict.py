"""`sotakit predict` and ``sotakit.predict``: known images, odd files, skipped files, formats, TTA and
the stored temperature."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import sotakit
from sotakit.data.images import read_image
from sotakit.evaluate.predict import find_images
from sotakit.evaluate.weights import read_meta, write_weights

RED, GREEN, BLUE = (200, 20, 30), (20, 190, 40), (25, 30, 210)


def odd_folder(root):
    """New images of the three colours, stored the odd ways cameras and editors store them, and files
    that are not images."""
    root.mkdir()
    Image.new("RGB", (40, 34), RED).save(root / "red.png")
    Image.new("RGB", (36, 36), GREEN).save(root / "green.jpg", quality=95)
    Image.new("RGB", (36, 36), BLUE).convert("CMYK").save(root / "blue_cmyk.jpg", quality=95)
    Image.new("RGB", (30, 30), RED).quantize(8).save(root / "red_palette.png")
    rgba = Image.new("RGBA", (30, 30), GREEN + (255,))
    rgba.save(root / "green_alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: read_image applies it
    Image.new("RGB", (40, 28), BLUE).save(root / "blue_rotated.jpg", exif=exif, quality=95)
    Image.fromarray(np.full((32, 32), 40000, dtype=np.uint16)).save(root / "gray16.png")
    sub = root / "more"
    sub.mkdir()
    Image.new("RGB", (33, 33), BLUE).save(sub / "blue.bmp")
    (root / "notes.txt").write_text("not an image")
    (root / "empty.jpg").write_bytes(b"")
    good = (root / "red.png").read_bytes()
    (root / "truncated.png").write_bytes(good[:len(good) // 2])
    (root / ".hidden.png").write_bytes(good)  # dot files are left out, like ImageFolder does
    return root


EXPECTED = {"red.png": "cat", "green.jpg": "dog", "blue_cmyk.jpg": "fox", "red_palette.png": "cat",
            "green_alpha.png": "dog", "blue_rotated.jpg": "fox", "more/blue.bmp": "fox"}
SKIPPED = {"notes.txt": "not_an_image_name", "empty.jpg": "empty", "truncated.png": "truncated"}


def test_known_images_predicted_and_bad_files_listed_with_the_reason(colour_run, tmp_path):
    folder = odd_folder(tmp_path / "new")
    results = sotakit.predict(colour_run, [folder], topk=2)
    by_name = {r.file[len(str(folder)) + 1:]: r for r in results}
    assert set(by_name) == set(EXPECTED) | set(SKIPPED) | {"gray16.png"}
    for name, category in EXPECTED.items():
        top = by_name[name].top
        assert top[0][0] == category, (name, top)
        assert len(top) == 2 and top[0][1] >= top[1][1] and sum(p for _, p in top) <= 1 + 1e-6
    for name, reason in SKIPPED.items():
        assert by_name[name].error.startswith(reason + ":") and by_name[name].top == []
    assert by_name["gray16.png"].error is None  # 16-bit grayscale: scaled to 8 bits, not clipped


def test_probabilities_are_those_of_the_documented_pipeline(colour_run, tmp_path):
    folder = odd_folder(tmp_path / "new")
    model, w = sotakit.load_model(colour_run)
    path = str(folder / "blue_cmyk.jpg")
    (r,) = sotakit.predict(model, path, weights=w, topk=3)
    with torch.inference_mode():
        probs = model(w.transforms()(read_image(path)[0]).unsqueeze(0)).softmax(1)[0]
    assert [c for c, _ in r.top] == [w.categories[i] for i in probs.argsort(descending=True).tolist()]
    assert [p for _, p in r.top] == pytest.approx(sorted(probs.tolist(), reverse=True), abs=1e-6)
    with pytest.raises(TypeError, match="needs weights="):
        sotakit.predict(model, path)


def test_tta_averages_the_mirror_and_temperature_is_applied(colour_run, tmp_path):
    Image.new("RGB", (32, 32), RED).save(tmp_path / "r.png")
    x = np.zeros((32, 32, 3), np.uint8)
    x[:, :16] = RED  # half red, half black: the mirror image differs
    Image.fromarray(x).save(tmp_path / "half.png")
    model, w = sotakit.load_model(colour_run)
    img = w.transforms()(read_image(str(tmp_path / "half.png"))[0]).unsqueeze(0)
    with torch.inference_mode():
        expected = (model(img).softmax(1) + model(img.flip(-1)).softmax(1)) / 2
    (r,) = sotakit.predict(w, tmp_path / "half.png", topk=3, tta=True)
    assert dict(r.top) == pytest.approx(dict(zip(w.categories, expected[0].tolist())), abs=1e-6)
    # a weights file with a temperature: probabilities are softmax(logits / T)
    hot = tmp_path / "hot.safetensors"
    write_weights(hot, w.get_state_dict(), {**read_meta(w.path), "temperature": 4.0})
    with torch.inference_mode():
        logits = model(img)[0]
    (r,) = sotakit.predict(hot, tmp_path / "half.png", topk=3)
    assert dict(r.top) == pytest.approx(dict(zip(w.categories, (logits / 4).softmax(0).tolist())), abs=1e-6)


def test_inputs_expand_folders_globs_and_name_what_is_missing(tmp_path):
    odd_folder(tmp_path / "new")
    files, missing = find_images([tmp_path / "new" / "*.png", tmp_path / "nope.png", tmp_path / "x*.jpg"])
    assert [f.rsplit("/", 1)[1] for f in files] == ["gray16.png", "green_alpha.png", "red.png",
                                                    "red_palette.png", "truncated.png"]
    assert [(m.file.rsplit("/", 1)[1], m.error) for m in missing] == [
        ("nope.png", "no such file or folder"), ("x*.jpg", "no file matches the pattern")]


@pytest.mark.slow
def test_cli_formats_and_the_exit_code_for_skipped_files(colour_run, tmp_path):
    from cli_runner import run_cli
    folder = odd_folder(tmp_path / "new")
    out = run_cli("predict", colour_run, folder / "red.png", folder / "more", "--format", "json",
                  "--topk", "1")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [(p["file"].rsplit("/", 1)[1], p["top"][0]["class"]) for p in doc["predictions"]] == [
        ("red.png", "cat"), ("blue.bmp", "fox")]
    assert doc["skipped"] == []
    out = run_cli("predict", colour_run, folder, "--format", "csv", "-o", tmp_path / "p.csv", "--tta",
                  "-b", "3")
    assert out.returncode == 4
    assert out.stderr.strip().splitlines()[-1].startswith("skipped 3 of 11 inputs: ")
    assert "truncated.png (truncated: " in out.stderr and "Traceback" not in out.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "p.csv").read_text())))
    assert len([r for r in rows if r["rank"] == "1"]) == 8 and len(rows) == 8 * 3 + 3
    assert {r["file"].rsplit("/", 1)[1] for r in rows if r["skipped"]} == {"notes.txt", "empty.jpg",
                                                                           "truncated.png"}
    out = run_cli("predict", colour_run, folder / "notes.txt")
    last = out.stderr.strip().splitlines()[-1]  # after the progress line
    assert out.returncode == 2 and last.startswith("error: none of the inputs is a readable image: ")
    out = run_cli("predict", colour_run, folder / "red.png")
    assert out.returncode == 0 and "cat" in out.stdout and "red.png" in out.stdout


@pytest.mark.slow
def test_fashion_mnist_png_predicts_what_the_eval_loader_gives(fmnist_root, tmp_path, one_thread):
    """Grayscale weights (channels 1): a test image saved as PNG, read back as RGB by read_image, gets
    the probabilities the eval loader's tensor gets."""
    from conftest import tiny_recipe
    from sotakit.train.evaluate_run import load_run, run_loaders
    recipe = tiny_recipe("fashion-mnist", tmp_path, data_root=str(fmnist_root.parent), train_limit=300,
                         test_limit=50, batch_size=32)
    run = sotakit.fit(recipe, verbose=False).run_dir
    model, w = sotakit.load_model(run)
    assert w.meta["preprocessing"]["channels"] == 1 and w.meta["_metrics"]["fashion-mnist"]["test"]["n"] == 50
    loaded = load_run(run)
    loaders = run_loaders(loaded.recipe, loaded.bundle)
    batch, _ = next(iter(loaders.test))
    ds = loaders.test.dataset
    Image.fromarray(ds.source.images[ds.indices[0], 0].numpy()).save(tmp_path / "first.png")
    (r,) = sotakit.predict(w, tmp_path / "first.png", topk=10)
    with torch.inference_mode():
        expected = model(batch[:1]).softmax(1)[0]
    assert dict(r.top) == pytest.approx(dict(zip(w.categories, expected.tolist())), abs=1e-6)
