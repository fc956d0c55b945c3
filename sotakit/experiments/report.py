"""`sotakit report`: one self-contained HTML page about a run or an ablation.

The page embeds its figures as base64 PNG and loads nothing from anywhere, so it can be mailed,
archived next to the results, or opened offline. Every number comes from the run directory, except
the confusion matrix and per-class accuracy, which are computed here by evaluating the run's last
checkpoint on the test split, and the sample grid, drawn with the run's own training pipeline.

The page is one Jinja2 template (``templates/report.html.j2``) rendered with autoescaping on: the
functions here gather plain values (text, numbers, base64 PNGs) and the template holds all the
markup, so a run name or a class folder named ``<script>`` is shown as text, never run.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
from pathlib import Path

import jinja2
import torch

from ..data import data_fingerprint, set_data_epoch
from ..evaluate import per_class_accuracy
from ..evaluate.calibration import calibration_metrics
from ..train.checkpoint import LAST, PREV
from ..train.evaluate_run import load_run, run_loaders
from ..train.recipe_kwargs import data_epoch_kwargs
from ..train.rundir import curves_figure, environment, read_metrics
from .runner import read_results
from .runs import find_runs, is_run_dir, read_run_file, run_info

log = logging.getLogger("sotakit.report")

# autoescape=True, not select_autoescape(): that one goes by file extension and ".j2" is not "html".
# StrictUndefined: a misspelt name in the template fails the report instead of leaving a blank.
TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("sotakit.experiments", "templates"),
                               autoescape=True, undefined=jinja2.StrictUndefined,
                               trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def figure_png(fig) -> str:
    """A matplotlib figure as base64 PNG text (the figure is closed)."""
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _fmt(v, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def throughput_figure(run_dir: Path):
    """Images per second of every logged step and the per-epoch figure; None without records."""
    records = read_metrics(run_dir)
    steps = [r for r in records if r.get("kind") == "step" and "img_s" in r]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    if not steps and not epochs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.2))
    if steps:
        per_epoch = max(r["step"] for r in steps) + 1
        ax.plot([r["epoch"] + r["step"] / per_epoch + 0.0 for r in steps], [r["img_s"] for r in steps], ".",
                alpha=0.6, label="logged steps")
    if epochs:
        ax.plot([r["epoch"] + 1 for r in epochs], [r["train_img_s"] for r in epochs], "o-",
                label="epoch (end)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training images / s")
    top = max([r["img_s"] for r in steps] + [r["train_img_s"] for r in epochs])
    ax.set_ylim(0, 1.15 * top)  # from zero, so a slowdown reads at its true size
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def confusion_figure(cm: torch.Tensor, classes: list[str], title: str):
    """The confusion matrix as a heat map (counts written in cells up to 20 classes) and per-class
    accuracy bars."""
    plt = _pyplot()
    k = len(classes)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.1, 1]})
    ax.imshow(cm.numpy(), cmap="Blues")
    if k <= 20:
        top = cm.max().item() or 1
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > top / 2 else "black")
    ticks = range(k) if k <= 40 else []
    ax.set_xticks(list(ticks), [classes[i] for i in ticks], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(list(ticks), [classes[i] for i in ticks], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    acc = per_class_accuracy(cm)
    bx.barh(range(k), acc.numpy()[::-1])
    bx.set_yticks(list(range(k)) if k <= 40 else [], classes[::-1] if k <= 40 else [], fontsize=7)
    bx.set_xlim(0, 100)
    bx.set_xlabel("accuracy (%)")
    bx.set_title("per-class accuracy")
    bx.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def reliability_figure(calib: dict, title: str):
    """The reliability diagram: accuracy per confidence bin against the diagonal (perfect calibration),
    with each bin's image count below."""
    plt = _pyplot()
    rel = calib["reliability"]
    bins = len(rel["count"])
    centers = [(b + 0.5) * 100 / bins for b in range(bins)]
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(5.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 100], [0, 100], "--", color="gray", label="perfectly calibrated")
    ax.bar(centers, [a or 0 for a in rel["accuracy"]], width=100 / bins * 0.9, alpha=0.8, label="accuracy")
    ax.plot([c for c, v in zip(rel["confidence"], rel["accuracy"]) if v is not None],
            [v for v in rel["accuracy"] if v is not None], "o", color="C3", markersize=4,
            label="(mean confidence, accuracy)")
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{title}: ECE {calib['ece']:.2f}%")
    ax.legend(fontsize=7, loc="upper left")
    bx.bar(centers, rel["count"], width=100 / bins * 0.9, color="C7")
    bx.set_xlim(0, 100)
    bx.set_xlabel("confidence (%)")
    bx.set_ylabel("images")
    fig.tight_layout()
    return fig


def sample_grid_figure(loaders, classes: list[str], mean, std, *, seed: int, count: int = 16,
                       crop_size: int | None = None):
    """The first training batch of epoch 0 as the model sees it (crop, flip, auto-augment, erasing,
    MixUp/CutMix).

    Seeded, so the same run gives the same grid; labels show the (possibly mixed) target.
    ``seed`` and ``crop_size`` are the run's for epoch 0 (``data_epoch_kwargs``).
    """
    plt = _pyplot()
    # Every sample's augmentation and every batch's mixing and erasing are seeded from the run's seed
    # and the sample's position (ResumableSampler), so this is the batch the run itself trained on.
    set_data_epoch(loaders, epoch=0, seed=seed, crop_size=crop_size)
    images, targets = next(iter(loaders.train))
    images, targets = images[:count], targets[:count]
    x = images * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    x = x.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    cols = min(8, len(x))
    rows = (len(x) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(x):
            continue
        ax.imshow(x[i])
        ax.set_title(_target_label(targets[i], classes), fontsize=7)
    fig.tight_layout()
    return fig


def _target_label(target: torch.Tensor, classes: list[str]) -> str:
    """A class name, or the two largest shares of a mixed target ("shirt .62 / coat .38")."""
    if target.ndim == 0:
        return classes[int(target)]
    w, idx = target.topk(min(2, len(classes)))
    if w[0] > 0.999:
        return classes[int(idx[0])]
    return " / ".join(f"{classes[int(i)][:10]} {float(v):.2f}" for v, i in zip(w, idx) if v > 0.005)


def run_context(run_dir: Path, *, samples: int = 16, say=None) -> dict:
    """What the report shows about one run, as plain values for the template; ``say`` is told each step
    (default: the "sotakit" logger)."""
    say = say or log.info
    info = run_info(run_dir)
    figures = []
    for heading, alt, fig in (("Training curves", "training curves", curves_figure(run_dir)),
                              ("Throughput", "throughput", throughput_figure(run_dir))):
        if fig is not None:
            figures.append({"heading": heading, "alt": alt, "png": figure_png(fig)})
    test = None
    if any((run_dir / name).is_file() for name in (LAST, PREV)):
        test = _test_context(run_dir, samples=samples, say=say)
    env_note, env = _environment(run_dir)
    return {"status": info["status"], "summary": _summary_rows(info), "figures": figures, "test": test,
            "recipe_text": (run_dir / "recipe.toml").read_text(), "environment_note": env_note,
            "environment": env}


def _test_context(run_dir: Path, *, samples: int, say) -> dict:
    """The last checkpoint on the test split (confusion, per-class accuracy), the sample grid, the data."""
    say(f"{run_dir.name}: loading the last checkpoint and its data")
    run = load_run(run_dir)
    loaders = run_loaders(run.recipe, run.bundle)
    classes = list(run.bundle.classes)
    n_test = len(loaders.test.dataset)
    say(f"{run_dir.name}: confusion matrix on the test split ({n_test} images)")
    models = []
    for label, model in (("model", run.model), ("EMA model", run.ema_model)):
        if model is None:
            continue
        from .inspect import interpretation, top_losses_figure  # inspect draws with this module's figures
        p, found = interpretation(model, loaders.test, classes, device=run.device)
        cm, losses_fig = found["cm"], top_losses_figure(loaders.test.dataset, found["top_losses"], classes)
        calib = calibration_metrics(p.probs.clamp_min(1e-12).log(), p.targets)  # log p: logits of p
        acc = per_class_accuracy(cm)
        models.append({
            "label": label, "acc1": f"{100 * cm.diagonal().sum().item() / max(1, cm.sum().item()):.2f}",
            "png": figure_png(confusion_figure(cm, classes, f"{label} (rows: true class)")),
            "calibration": f"ECE {calib['ece']:.2f}% (15 bins), NLL {calib['nll']:.4f}, "
                           f"Brier {calib['brier']:.4f}",
            "reliability_png": figure_png(reliability_figure(calib, f"{label}: reliability on test")),
            "per_class": [[c, int(cm[i].sum()), int(cm[i, i]), _fmt(acc[i].item())]
                          for i, c in enumerate(classes)],
            "confused": [list(c) for c in found["most_confused"][:10]],
            "top_losses_png": figure_png(losses_fig),
        })
    say(f"{run_dir.name}: augmented training samples")
    grid = sample_grid_figure(loaders, classes, run.bundle.mean, run.bundle.std,
                              **data_epoch_kwargs(run.recipe, epoch=0),
                              count=samples)
    say(f"{run_dir.name}: data fingerprint")
    b = run.bundle
    data = [["data set", b.name], ["classes", len(classes)], ["native size (px)", b.native_size],
            ["train images (whole set)", len(b.train)], ["test images (whole set)", len(b.test)],
            ["used for training", len(loaders.train.dataset)], ["used for test", n_test],
            ["SHA-256 fingerprint", data_fingerprint(b)]]
    return {"epoch": run.ckpt["epoch"], "step": run.ckpt["step_in_epoch"], "images": n_test,
            "models": models, "samples_png": figure_png(grid), "data": data}


def _summary_rows(info: dict) -> list[list]:
    src = info["acc_source"]
    return [["status", info["status"]], ["recipe", info["recipe"] or "-"], ["model", info["model"]],
            ["data", info["data"]], ["seed", info["seed"]],
            ["epochs", f"{info['epochs_done']}/{info['epochs']}"],
            [f"acc@1 / acc@5 ({src})", f"{_fmt(info['acc1'])} / {_fmt(info['acc5'])}"],
            [f"EMA acc@1 / acc@5 ({src})", f"{_fmt(info['ema_acc1'])} / {_fmt(info['ema_acc5'])}"],
            ["wall time (s)", _fmt(info["wall_time_s"], ".1f")], ["median img/s", _fmt(info["img_s"], ".0f")]]


def _environment(run_dir: Path) -> tuple[str, list[list]]:
    summary = read_run_file(run_dir / "summary.json", json.loads)
    if summary is not None:
        env, note = summary.get("environment", {}), "as stored in summary.json"
    else:
        env = environment()
        note = "the run has no summary.json: this is the environment the report was made in"
    return note, [[k, "-" if v is None else v] for k, v in env.items()]


def experiment_kind(path: Path) -> str | None:
    """"sweep" (sweep.md/sweep.csv, written by `sotakit sweep`), "ablation" (results.jsonl or
    ablation.md, by `sotakit ablate`), or None."""
    if (path / "sweep.md").is_file() or (path / "sweep.csv").is_file():
        return "sweep"
    if (path / "results.jsonl").is_file() or (path / "ablation.md").is_file():
        return "ablation"
    return None


def ablation_context(ablation_dir: Path, out_dir: Path, kind: str = "ablation") -> dict:
    """The ablation (or sweep) table and plot, and one row per (step, seed) run with a link to its
    directory. ``kind`` names the files read: ablation.md/.png or sweep.md/.png."""
    md, png = ablation_dir / f"{kind}.md", ablation_dir / f"{kind}.png"
    results = read_results(ablation_dir / "results.jsonl")
    runs = [{"cells": [r["step"], r["seed"], _fmt(r["acc1"]), _fmt(r.get("ema_acc1")),
                       _fmt(r["wall_time_s"], ".0f"), _fmt(r.get("img_s"), ".0f")],
             "href": os.path.relpath(r["run_dir"], out_dir), "last": Path(r["run_dir"]).name}
            for r in results]
    listed = {Path(r["run_dir"]).resolve() for r in results}
    for path in find_runs(ablation_dir):  # runs without a results line: unfinished or failed
        if path.resolve() not in listed:
            info = run_info(path)
            runs.append({"cells": [info["name"], info["seed"], "-", "-", "-", "-"], "href": None,
                         "last": info["status"]})
    return {"table": markdown_table(md.read_text()) if md.is_file() else None,
            "plot_png": base64.b64encode(png.read_bytes()).decode() if png.is_file() else None,
            "finished": len(results), "runs": runs, "kind": kind,
            "plot_title": "Stacked gains" if kind == "ablation" else "Accuracy over the grid"}


def markdown_table(text: str) -> dict:
    """A Markdown pipe table (as ablation.md holds) as header and rows; other lines as paragraphs."""
    rows, paragraphs = [], []
    for line in text.splitlines():
        if line.strip().startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):  # skip the |---|---| separator
                rows.append(cells)
        elif line.strip():
            paragraphs.append(line)
    return {"header": rows[0] if rows else None, "rows": rows[1:], "paragraphs": paragraphs}


def write_report(path: str | Path, *, out: str | Path | None = None, samples: int = 16, say=None) -> Path:
    """Write the report of a run, ablation or sweep directory; return the HTML file's path."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory: give a run directory or an ablation directory")
    out = Path(out) if out else path / "report.html"
    if is_run_dir(path):
        context = {"title": f"Run {path.name}", "run": run_context(path, samples=samples, say=say)}
    elif kind := experiment_kind(path):
        context = {"title": f"{kind.capitalize()} {path.name}",
                   "ablation": ablation_context(path, out.parent, kind)}
    else:
        raise FileNotFoundError(f"{path} holds neither recipe.toml (a run), sweep.md (a sweep) nor "
                                "results.jsonl/ablation.md (an ablation); `sotakit runs --root DIR` lists "
                                "runs")
    out.write_text(render_page(context), encoding="utf-8")
    return out


def render_page(context: dict) -> str:
    """The HTML page: ``title`` and either ``run`` (run_context) or ``ablation`` (ablation_context)."""
    return TEMPLATES.get_template("report.html.j2").render(context)
