"""Promise 4, bad images never stop a run: 36 odd or broken files of 12 kinds among 300 good images.

Broken kinds are excluded by the index pass and listed with their reason in data_report.csv; odd but
valid kinds load with the right pixels; a file that breaks after the scan is replaced and counted,
and only past --max-decode-errors does the run stop, with a message naming the count and the flag.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_runner import run_cli
from conftest import corrupt_in_place
from sotakit.data import DecodeErrorLimit, load_image_folder, make_loaders, write_data_report
from sotakit.data.images import ImageRejected, read_image, to_rgb

CLASSES = ("ant", "bee", "cow")
MAX_PIXELS = 64 * 64  # lowered for the test: the oversized kind is 80 x 80
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def _two_halves(w: int, h: int, left, right) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2], a[:, w // 2:] = left, right
    return Image.fromarray(a)


def _noise(rng, size=16) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


# Broken kinds: file name -> (bytes maker, reason expected in data_report.csv).
def broken_kinds(rng) -> dict[str, tuple[bytes, str]]:
    jpeg = _bytes(_noise(rng, 48), "JPEG", quality=95)
    return {
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "empty.jpg": (b"", "empty"),
        "random.jpg": (rng.bytes(3000), "not_an_image"),
        # A PNG named .jpg decodes fine, yet it is excluded: the issue lists mislabelled files as
        # broken, the name no longer says what parser the content needs (other decoders such as
        # torchvision.io.decode_jpeg or nvJPEG fail on it), and a content/name mismatch is how a
        # scraper's error page or a half-renamed file looks. The reason says to rename it.
        "png_named.jpg": (_bytes(_noise(rng), "PNG"), "mislabelled"),
        "notes.txt": (b"label: ant\nsource: camera 2\n", "not_an_image_name"),
        "huge.png": (_bytes(_noise(rng, 80), "PNG"), "oversized"),
    }


def _exif_rotated() -> bytes:
    im = _two_halves(40, 20, RED, BLUE)  # stored 40 wide, red left, blue right
    exif = im.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: 20 wide, red on top
    return _bytes(im, "JPEG", exif=exif.tobytes(), quality=95)


def _palette_transparent() -> bytes:
    p = Image.new("P", (16, 16), 0)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.paste(1, (8, 0, 16, 16))  # right half red, left half index 0 = transparent (stored black)
    return _bytes(p, "PNG", transparency=0)


def _rgba() -> bytes:
    a = np.zeros((16, 16, 4), np.uint8)  # left half fully transparent (stored black)
    a[:, 8:] = (0, 255, 0, 255)
    a[:8, 8:] = (255, 0, 0, 128)  # top right: half-transparent red
    return _bytes(Image.fromarray(a), "PNG")


def _gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, BLUE, GREEN)]
    return _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])


def _pixel(rgb: Image.Image, x: int, y: int) -> np.ndarray:
    return np.asarray(rgb)[y, x].astype(int)


def _check_rotated(rgb) -> bool:
    return (rgb.size == (20, 40) and np.abs(_pixel(rgb, 10, 5) - RED).max() < 20
            and np.abs(_pixel(rgb, 10, 34) - BLUE).max() < 20)


def _check_palette(rgb) -> bool:  # convert("RGB") would show the stored black
    return tuple(_pixel(rgb, 2, 2)) == (255, 255, 255) and tuple(_pixel(rgb, 12, 2)) == RED


def _check_rgba(rgb) -> bool:
    return (tuple(_pixel(rgb, 2, 2)) == (255, 255, 255) and tuple(_pixel(rgb, 12, 12)) == GREEN
            and np.abs(_pixel(rgb, 12, 2) - (255, 127, 127)).max() <= 1)  # 50% red over white


# Odd but valid kinds: file name -> (bytes, mode Pillow reports, check of the RGB pixels).
ODD_KINDS = {
    "exif_rotated.jpg": (_exif_rotated(), "RGB", _check_rotated),
    "cmyk.jpg": (_bytes(Image.new("RGB", (16, 16), (200, 50, 30)).convert("CMYK"), "JPEG", quality=95),
                 "CMYK", lambda rgb: np.abs(_pixel(rgb, 8, 8) - (200, 50, 30)).max() < 8),
    # mid-gray 32768 of 65535 is 127.5 of 255; convert("RGB") clips it to 255
    "gray16.png": (_bytes(Image.fromarray(np.full((16, 16), 32768, np.uint16)), "PNG"), "I;16",
                   lambda rgb: tuple(_pixel(rgb, 3, 3)) == (128, 128, 128)),
    "palette_alpha.png": (_palette_transparent(), "P", _check_palette),
    "rgba.png": (_rgba(), "RGBA", _check_rgba),
    "frames.gif": (_gif(), "P", lambda rgb: tuple(_pixel(rgb, 8, 8)) == RED),
}


def make_fault_folder(root, *, per_class=(90, 10), seed=0):
    """300 good images (3 classes x 100) plus each broken and odd kind three times, once per class."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val"), per_class):
        for ci, c in enumerate(CLASSES):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                tone = np.zeros((16, 16, 3), np.uint8)
                tone[..., ci] = 200
                image = Image.fromarray(tone + rng.integers(0, 40, tone.shape, dtype=np.uint8))
                image.save(d / (f"{i}.png" if i % 2 else f"{i}.jpg"))
    broken = {}
    for c in CLASSES:
        for name, (data, reason) in broken_kinds(rng).items():
            (root / "train" / c / name).write_bytes(data)
            broken[f"train/{c}/{name}"] = reason
        for name, (data, _, _) in ODD_KINDS.items():
            (root / "train" / c / name).write_bytes(data)
    return root, broken


def report_rows(path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def fault_folder(tmp_path_factory):
    return make_fault_folder(tmp_path_factory.mktemp("faults") / "data")


def test_broken_files_are_reported_and_odd_ones_load_right(fault_folder, tmp_path):
    root, broken = fault_folder
    bundle = load_image_folder(root, max_pixels=MAX_PIXELS)  # no exception: 0 crashes
    assert len(broken) == 18 and len(ODD_KINDS) * 3 == 18
    assert dict(bundle.skipped) == {p: r for p, r in broken.items()}
    assert len(bundle.train) == 270 + 18 and len(bundle.test) == 30
    write_data_report(tmp_path / "data_report.csv", bundle.report)
    rows = report_rows(tmp_path / "data_report.csv")
    assert len(rows) == 300 + 36
    for path, reason in broken.items():
        assert (rows[path]["status"], rows[path]["reason"]) == ("excluded", reason)
        assert rows[path]["class"] == path.split("/")[1] and rows[path]["detail"]
    assert "rename it to .png" in rows["train/ant/png_named.jpg"]["detail"]
    assert "more than the limit 4096" in rows["train/ant/huge.png"]["detail"]
    loaded = {p: r for p, r in rows.items() if r["status"] == "loaded"}
    assert all(r["reason"] == "" and r["width"] and r["mode"] for r in loaded.values())
    # every odd file: listed as loaded with its stored mode, and read with the right pixels
    paths = {os.path.relpath(p, root): i for i, (p, _) in enumerate(bundle.train.samples)}
    for c in CLASSES:
        for name, (_, mode, check) in ODD_KINDS.items():
            rel = f"train/{c}/{name}"
            assert rows[rel]["mode"] == mode, rel
            image, j = bundle.train.load(paths[rel])
            assert j == paths[rel] and image.mode == "RGB"
            assert check(image), rel
    assert rows["train/ant/exif_rotated.jpg"]["detail"] == "EXIF orientation 6 applied"
    assert (rows["train/ant/exif_rotated.jpg"]["width"],
            rows["train/ant/exif_rotated.jpg"]["height"]) == ("20", "40")
    assert rows["train/ant/frames.gif"]["detail"].startswith("frame 1 of 3")
    # and a whole pass of the loader over every kept image replaces nothing
    loaders = make_loaders(bundle, batch_size=64, train_crop_size=16, val_resize_size=16, val_crop_size=16,
                           max_decode_errors=0.0)
    assert sum(len(x) for x, _ in loaders.train) == 288
    assert bundle.train.decode_errors() == 0


def test_sixteen_bit_and_other_modes_convert_without_saturating():
    # the bug
    assert np.asarray(Image.fromarray(np.full((2, 2), 32768, np.uint16)).convert("RGB")).max() == 255
    cases = {
        "I;16": (Image.fromarray(np.array([[0, 257], [32768, 65535]], np.uint16)), [0, 1, 128, 255]),
        "I": (Image.fromarray(np.array([[0, 257], [32768, 70000]], np.int32)), [0, 1, 128, 255]),
        "L": (Image.fromarray(np.array([[0, 7], [128, 255]], np.uint8)), [0, 7, 128, 255]),
        "LA": (Image.fromarray(np.array([[[9, 0], [9, 255]], [[128, 255], [40, 255]]], np.uint8)),
               [255, 9, 128, 40]),  # the transparent pixel shows white
    }
    for mode, (im, want) in cases.items():
        assert im.mode == mode
        rgb, _ = to_rgb(im)
        got = np.asarray(rgb)
        assert got.shape == (2, 2, 3) and (got == got[..., :1]).all(), mode  # gray stays gray
        assert got[..., 0].flatten().tolist() == want, mode


# workers=2 starts worker processes, and the two the raise leaves behind are shut down only when the
# loader is collected, 5 s each (DataLoader's join timeout): 10 s for whichever test comes next.
@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_file_broken_after_the_scan_is_replaced_counted_then_stops(tmp_path, folder_factory, workers):
    root = folder_factory(tmp_path / "d", per_class=(10, 2))  # 30 train images, 32 px PNGs
    bundle = load_image_folder(root)
    victims = [3, 17]
    for i in victims:
        Path(bundle.train.samples[i][0]).write_bytes(b"garbage")
    loaders = make_loaders(bundle, batch_size=8, train_crop_size=32, val_resize_size=32, val_crop_size=32,
                           workers=workers, max_decode_errors=2 / 30)  # 2 allowed
    assert sum(len(x) for x, _ in loaders.train) == 30  # every step got a full set of images
    assert bundle.train.decode_errors() == 2  # counted in the main process, also from workers
    assert bundle.train.load(3)[1] == 4 and bundle.train.load(17)[1] == 18  # replaced by the next one
    assert bundle.train.targets[4] == bundle.train.targets[3]  # (the next file of a class folder)
    Path(bundle.train.samples[25][0]).write_bytes(b"")
    with pytest.raises(DecodeErrorLimit) as e:  # raised in a worker, re-raised here with its message
        for _ in loaders.train:
            pass
    assert "3 of 30 images failed to decode during the run" in str(e.value)
    assert "--max-decode-errors 0.0666" in str(e.value) and "(2 images)" in str(e.value)


def sotakit_train(data, out, *extra):
    # run_cli reads the environment at the call: the test's isolated XDG_CACHE_HOME reaches the child,
    # so the child finds the index pass this test ran (and cached) before it.
    return run_cli("train", "--data", data, "--model", "resnet9_w16", "--epochs", "1", "-b", "16",
                   "--device", "cpu", "--workers", "0", "--output-dir", out, "--lr", "0.05", *extra)


@pytest.mark.slow
def test_sotakit_train_finishes_on_a_faulty_folder_and_writes_the_report(tmp_path):
    root, broken = make_fault_folder(tmp_path / "data", per_class=(8, 4))
    # odd kinds are 16-40 px and the good ones 16 px; one good image breaks after the index pass
    load_image_folder(root)  # the index pass, cached like a previous run's
    late = root / "train" / "bee" / "3.png"
    corrupt_in_place(late)
    r = sotakit_train(root, tmp_path / "out", "--max-decode-errors", "0.05")
    assert r.returncode == 0, r.stderr[-2000:]
    # a note: on stderr since notes and results were parted (issue 9)
    assert "skipped 15 unreadable files (listed with the reason in data_report.csv)" in r.stderr
    run = next((tmp_path / "out" / "runs").iterdir())
    rows = report_rows(run / "data_report.csv")
    # default limit
    del broken["train/ant/huge.png"], broken["train/bee/huge.png"], broken["train/cow/huge.png"]
    assert {p: r["reason"] for p, r in rows.items() if r["status"] == "excluded"} == broken
    assert rows["train/bee/3.png"]["status"] == "loaded"  # as the index saw it
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped_files"] == 15 and summary["decode_errors"] == 1
    assert summary["test"]["n"] == 12


@pytest.mark.slow
def test_sotakit_train_stops_past_the_threshold_with_the_flag_named(tmp_path, folder_factory):
    root = folder_factory(tmp_path / "d", per_class=(10, 2))
    load_image_folder(root)
    for name in ("2.png", "5.png"):
        corrupt_in_place(root / "train" / "dog" / name)
    r = sotakit_train(root, tmp_path / "out", "--max-decode-errors", "0.04")  # 30 images: 1.2 allowed
    assert r.returncode == 2, r.stderr[-2000:]
    assert ("error: 2 of 30 images failed to decode during the run, more than the threshold "
            "--max-decode-errors 0.04 (1.2 images)") in r.stderr
    assert "raise --max-decode-errors to continue" in r.stderr


def test_read_image_refuses_what_the_scan_refuses(tmp_path):
    (tmp_path / "a.jpg").write_bytes(_bytes(_noise(np.random.default_rng(1), 80), "PNG"))
    with pytest.raises(ImageRejected, match="mislabelled: extension .jpg but the content is PNG"):
        read_image(str(tmp_path / "a.jpg"))
    (tmp_path / "a.png").write_bytes((tmp_path / "a.jpg").read_bytes())
    assert read_image(str(tmp_path / "a.png"))[1]["width"] == 80
    with pytest.raises(ImageRejected, match="oversized: 80x80 = 6400 pixels, more than the limit 6399"):
        read_image(str(tmp_path / "a.png"), max_pixels=6399)
