"""`sotakit report`: one self-contained HTML page, parsed back and checked against the run directory."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser

import pytest
import torch
from PIL import Image

from conftest import make_image_folder, single_thread, tiny_recipe
from sotakit.cli import main
from sotakit.data import data_fingerprint, load_data
from sotakit.experiments.report import _target_label, write_report
from sotakit.train import fit


class Page(HTMLParser):
    """Collects headings, text, image sources, link targets and table cells of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.srcs, self.hrefs, self.h2, self.h3, self.cells, self.text = [], [], [], [], [], [], []
        self._in = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        self.srcs += [a["src"]] if "src" in a else []
        self.hrefs += [a["href"]] if "href" in a else []
        self._in = tag

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        self.text.append(data)
        if self._in in ("h2", "h3"):
            getattr(self, self._in).append(data.strip())
        if self._in == "td":
            self.cells.append(data)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One epoch with EMA, MixUp/CutMix and random erasing, on a run name that needs escaping."""
    tmp = tmp_path_factory.mktemp("report")
    data = make_image_folder(tmp / "imgs")
    with single_thread():
        res = fit(tiny_recipe(data, tmp, seed=3, model_ema=True, model_ema_steps=1, mixup_alpha=0.2,
                              cutmix_alpha=1.0, random_erase=0.5, run_name="x<i>&y"), verbose=False)
    return {"dir": res.run_dir, "summary": res.summary, "data": data, "tmp": tmp}


@pytest.mark.slow
def test_run_report_content(run, tmp_path):
    out = write_report(run["dir"], out=tmp_path / "r.html", say=lambda *a: None)
    text = out.read_text()
    page = Page(text)
    assert page.h2[:1] == ["Summary"] and {
        "Training curves", "Throughput", "Augmented training samples", "Data", "Resolved recipe",
        "Environment", "Test split: confusion matrix and per-class accuracy"} <= set(page.h2)
    # the run name is text, not markup
    assert "i" not in page.tags and f"Run {run['dir'].name}" in page.text and "x&lt;i&gt;&amp;y" in text
    # nine figures: curves, throughput, confusion, top losses and reliability (model, EMA), samples; real
    # PNGs, inline
    assert len(page.srcs) == 9 and all(s.startswith("data:image/png;base64,") for s in page.srcs)
    for s in page.srcs:
        with Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))) as im:
            assert im.format == "PNG" and im.size[0] > 100
    assert not any(re.match(r"(https?:)?//", x) for x in page.srcs + page.hrefs) and "<link" not in text
    # the recipe as resolved, the fingerprint of the data it was trained on, the stored environment
    body = "".join(page.text)
    assert "mixup_alpha = 0.2" in body and "random_erase = 0.5" in body and 'model = "resnet9_w16"' in body
    assert data_fingerprint(load_data(str(run["data"]))) in page.cells
    assert run["summary"]["environment"]["git_commit"] in page.cells
    # the confusion matrix comes from evaluating the checkpoint: its acc@1 is the summary's,
    # 4 test images a class
    s = run["summary"]
    assert page.h3 == [f"model: acc@1 {s['test']['acc1']:.2f}", "model: most confused and highest losses",
                       f"EMA model: acc@1 {s['test_ema']['acc1']:.2f}",
                       "EMA model: most confused and highest losses"]
    classes = ("cat", "dog", "fox")
    rows = [page.cells[i:i + 4] for i, c in enumerate(page.cells)
            if c in classes and page.cells[i + 1].isdigit() and "." in page.cells[i + 3]]  # per-class rows
    assert len(rows) == 6 and all(r[1] == "4" for r in rows)
    assert all(float(r[3]) == pytest.approx(100 * int(r[2]) / 4) for r in rows)
    # the most-confused tables count every misclassified test image: (true, predicted, images) rows
    confused = [page.cells[i:i + 3] for i, c in enumerate(page.cells[:-2])
                if c in classes and page.cells[i + 1] in classes and page.cells[i + 2].isdigit()]
    wrong = sum(4 - int(r[2]) for r in rows)
    assert sum(int(r[2]) for r in confused) == wrong
    # calibration beside it, the numbers summary.json has for the same checkpoint and split
    for key in ("test", "test_ema"):
        m = s[key]
        line = f"ECE {m['ece']:.2f}% (15 bins), NLL {m['nll']:.4f}, Brier {m['brier']:.4f}"
        assert f"Calibration on test: {line}." in body


def test_mixed_target_labels():
    classes = ["shirt", "coat", "bag"]
    assert _target_label(torch.tensor(2), classes) == "bag"
    assert _target_label(torch.tensor([0.62, 0.38, 0.0]), classes) == "shirt 0.62 / coat 0.38"
    assert _target_label(torch.tensor([0.0, 1.0, 0.0]), classes) == "coat"


@pytest.mark.slow
def test_ablation_report(run, capsys):
    abl = run["tmp"] / "abl"
    (abl / "runs").mkdir(parents=True)
    run_dir = shutil.copytree(run["dir"], abl / "runs" / "20260101-000000-baseline-s0")
    (abl / "results.jsonl").write_text(json.dumps({
        "step": "baseline", "seed": 0, "recipe_hash": "h", "run_dir": str(run_dir), "acc1": 61.25,
        "acc5": 99.0, "ema_acc1": None, "ema_acc5": None, "wall_time_s": 12.0, "img_s": 345.0}) + "\n")
    (abl / "ablation.md").write_text("| step | Acc@1 |\n|---|---|\n| Baseline <b> | 61.25 ± 0.00 |\n")
    shutil.copy(run["dir"] / "curves.png", abl / "ablation.png")
    assert main(["report", str(abl)]) == 0
    assert str(abl / "report.html") in capsys.readouterr().out
    page = Page((abl / "report.html").read_text())
    assert {"Ablation table", "Stacked gains", "Runs (1 finished)"} <= set(page.h2)
    assert "Baseline <b>" in page.cells and "b" not in page.tags and "61.25 ± 0.00" in page.cells
    assert "61.25" in page.cells and "345" in page.cells
    assert page.hrefs == ["runs/20260101-000000-baseline-s0"] and len(page.srcs) == 1


def test_report_of_something_else_says_what_it_needs(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "neither recipe.toml" in capsys.readouterr().err


@pytest.mark.slow
def test_sample_grid_is_seeded_and_shows_mixing(run):
    from sotakit.experiments.report import figure_png, sample_grid_figure
    from sotakit.train.evaluate_run import load_run, run_loaders
    loaded = load_run(run["dir"])
    loaders = run_loaders(loaded.recipe, loaded.bundle)
    b = loaded.bundle

    def grid():
        return figure_png(sample_grid_figure(loaders, b.classes, b.mean, b.std, seed=loaded.recipe.seed,
                                             count=4))

    assert grid() == grid()  # same run, same picture
    torch.manual_seed(loaded.recipe.seed)
    loaders.train_sampler.set_epoch(0)
    _, targets = next(iter(loaders.train))
    assert targets.ndim == 2 and (targets.max(dim=1).values < 1).any()  # MixUp/CutMix targets are shares


MARKUP_CLASSES = ("<img src=x onerror=alert(1)>", 'a&b"', "cat")  # folder names cannot hold "/"


@pytest.mark.slow
def test_class_folder_names_are_text_never_markup(tmp_path):
    data = make_image_folder(tmp_path / "imgs", classes=MARKUP_CLASSES, per_class=(4, 2))
    with single_thread():
        res = fit(tiny_recipe(data, tmp_path), verbose=False)
    text = write_report(res.run_dir, out=tmp_path / "r.html", say=lambda *a: None).read_text()
    page = Page(text)
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "a&amp;b&#34;" in text
    assert "onerror=alert(1)>" not in text and 'a&b"' not in text
    # The only <img> tags are the six figures (curves, throughput, confusion, top losses, reliability,
    # samples), none from a class.
    assert page.tags.count("img") == len(page.srcs) == 6
    assert all(s.startswith("data:image/png;base64,") for s in page.srcs)
    rows = [page.cells[i:i + 4] for i, c in enumerate(page.cells)
            if c in MARKUP_CLASSES and page.cells[i + 1].isdigit() and "." in page.cells[i + 3]]
    assert [r[0] for r in rows] == sorted(MARKUP_CLASSES) and all(r[1] == "2" for r in rows)


def test_every_value_in_the_template_is_escaped():
    """A hostile string in every slot of both page kinds comes out as text: no tag but the template's."""
    from sotakit.experiments.report import render_page
    evil = '<script>alert("x")</script>&\'"'
    run = {"status": evil, "summary": [[evil, evil]],
           "figures": [{"heading": evil, "alt": evil, "png": "AA=="}],
           "test": {"epoch": evil, "step": evil, "images": evil, "samples_png": "AA==",
                    "data": [[evil, evil]],
                    "models": [{"label": evil, "acc1": evil, "png": "AA==", "calibration": evil,
                                "reliability_png": "AA==", "per_class": [[evil, 1, 1, evil]],
                                "confused": [[evil, evil, 1]], "top_losses_png": "AA=="}]},
           "recipe_text": evil, "environment_note": evil, "environment": [[evil, evil]]}
    ablation = {"table": {"header": [evil], "rows": [[evil]], "paragraphs": [evil]}, "plot_png": "AA==",
                "finished": 1, "runs": [{"cells": [evil], "href": evil, "last": evil},
                                        {"cells": [evil], "href": None, "last": evil}]}
    for context in ({"title": evil, "run": run}, {"title": evil, "ablation": ablation}):
        text = render_page(context)
        page = Page(text)
        assert "script" not in page.tags and "<script" not in text and evil in "".join(page.text)
        assert all(h in ("AA==", evil) or h.startswith("data:") for h in page.srcs + page.hrefs)
        assert f'<a href="{evil}"' not in text
