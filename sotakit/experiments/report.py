"""`sotakit report`: one self-contained HTML page about a run or an ablation.

The page embeds its figures as base64 PNG and loads nothing from anywhere, so it can be mailed,
archived next to the results, or opened offline. Every number comes from the run directory, except
the confusion matrix and per-class accuracy, which are computed here by evaluating the run's last
checkpoint on the test split, and the sample grid, drawn with the run's own training pipeline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path

import torch

from ..data import data_fingerprint
from ..evaluate import confusion, per_class_accuracy
from ..train.evaluate_run import load_run, run_loaders
from ..train.rundir import curves_figure, environment, read_metrics
from .runner import read_results
from .runs import find_runs, is_run_dir, run_info

STYLE = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em;word-break:break-all}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}table.kv td{text-align:left}table.kv td:first-child{color:#555}td:first-child,th:first-child{text-align:left}img{max-width:100%;height:auto}
pre{background:#f7f7f7;padding:.8em;white-space:pre-wrap;font-size:.85em}pre.recipe{column-width:26em}code{word-break:break-all}
.status-finished{color:#176b1f}.status-failed{color:#b00020}.status-interrupted,.status-running{color:#a66a00}"""


def figure_png(fig) -> str:
    """A matplotlib figure as base64 PNG text (the figure is closed)."""
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _table(header: list[str] | None, rows: list[list]) -> str:
    """An HTML table, every cell escaped; without ``header``, a left-aligned key/value table."""
    head = "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    attrs = "" if header else ' class="kv"'
    return f"<table{attrs}>{head}{body}</table>"


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
        ax.plot([r["epoch"] + 1 for r in epochs], [r["train_img_s"] for r in epochs], "o-", label="epoch (end)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training images / s")
    top = max([r["img_s"] for r in steps] + [r["train_img_s"] for r in epochs])
    ax.set_ylim(0, 1.15 * top)  # from zero, so a slowdown reads at its true size
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def confusion_figure(cm: torch.Tensor, classes: list[str], title: str):
    """The confusion matrix as a heat map (counts written in cells up to 20 classes) and per-class accuracy bars."""
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


def sample_grid_figure(loaders, classes: list[str], mean, std, *, seed: int, count: int = 16):
    """The first training batch of epoch 0 as the model sees it (crop, flip, auto-augment, erasing, MixUp/CutMix).

    Seeded, so the same run gives the same grid; labels show the (possibly mixed) target.
    """
    plt = _pyplot()
    # Every sample's augmentation and every batch's mixing and erasing are seeded from the run's seed
    # and the sample's position (ResumableSampler), so this is the batch the run itself trained on.
    loaders.train_sampler.set_epoch(0)
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


def run_sections(run_dir: Path, *, samples: int = 16, say=print) -> tuple[list[str], dict]:
    """The HTML sections of one run and facts for tests: the fingerprint and the confusion matrix."""
    info = run_info(run_dir)
    sections = [_summary_section(info)]
    fig = curves_figure(run_dir)
    if fig is not None:
        sections.append("<h2>Training curves</h2>" + _img(figure_png(fig), "training curves"))
    fig = throughput_figure(run_dir)
    if fig is not None:
        sections.append("<h2>Throughput</h2>" + _img(figure_png(fig), "throughput"))
    facts = {}
    if (run_dir / "checkpoint-last.pt").is_file():
        say(f"{run_dir.name}: loading the last checkpoint and its data")
        run = load_run(run_dir)
        loaders = run_loaders(run.recipe, run.bundle)
        classes = list(run.bundle.classes)
        say(f"{run_dir.name}: confusion matrix on the test split ({len(loaders.test.dataset)} images)")
        parts = ["<h2>Test split: confusion matrix and per-class accuracy</h2>",
                 f"<p>Last checkpoint (epoch {run.ckpt['epoch']}, step {run.ckpt['step_in_epoch']}) "
                 f"evaluated on {len(loaders.test.dataset)} test images.</p>"]
        for label, model in (("model", run.model), ("EMA model", run.ema_model)):
            if model is None:
                continue
            cm = confusion(model, loaders.test, num_classes=len(classes), device=run.device)
            facts.setdefault("confusion", cm)
            parts.append(f"<h3>{html.escape(label)}: acc@1 {100 * cm.diagonal().sum().item() / max(1, cm.sum().item()):.2f}</h3>")
            parts.append(_img(figure_png(confusion_figure(cm, classes, f"{label} (rows: true class)")), f"confusion matrix ({label})"))
            acc = per_class_accuracy(cm)
            parts.append(_table(["class", "images", "correct", "accuracy (%)"],
                                [[c, int(cm[i].sum()), int(cm[i, i]), _fmt(acc[i].item())] for i, c in enumerate(classes)]))
        sections.append("".join(parts))
        say(f"{run_dir.name}: augmented training samples")
        fig = sample_grid_figure(loaders, classes, run.bundle.mean, run.bundle.std, seed=run.recipe.seed, count=samples)
        sections.append("<h2>Augmented training samples</h2><p>The first batch of epoch 0 from the run's own "
                        "training pipeline (seeded; crop, flip, automatic augmentation, random erasing, "
                        "MixUp/CutMix as the recipe sets them).</p>" + _img(figure_png(fig), "augmented training samples"))
        say(f"{run_dir.name}: data fingerprint")
        facts["fingerprint"] = data_fingerprint(run.bundle)
        sections.append("<h2>Data</h2>" + _table(None, [
            ["data set", run.bundle.name], ["classes", len(classes)], ["native size (px)", run.bundle.native_size],
            ["train images (whole set)", len(run.bundle.train)], ["test images (whole set)", len(run.bundle.test)],
            ["used for training", len(loaders.train.dataset)], ["used for test", len(loaders.test.dataset)],
            ["SHA-256 fingerprint", facts["fingerprint"]]]) +
            "<p>Fingerprint: SHA-256 of the class names and, per split, the sorted file list with sizes and labels "
            "(folder data) or the image and label tensors (in-memory data).</p>")
    sections.append('<h2>Resolved recipe</h2><pre class="recipe">' + html.escape((run_dir / "recipe.toml").read_text()) + "</pre>")
    sections.append(_environment_section(run_dir))
    return sections, facts


def _summary_section(info: dict) -> str:
    status = info["status"]
    rows = [["status", status], ["recipe", info["recipe"] or "-"], ["model", info["model"]], ["data", info["data"]],
            ["seed", info["seed"]], ["epochs", f"{info['epochs_done']}/{info['epochs']}"],
            [f"acc@1 / acc@5 ({info['acc_source']})", f"{_fmt(info['acc1'])} / {_fmt(info['acc5'])}"],
            [f"EMA acc@1 / acc@5 ({info['acc_source']})", f"{_fmt(info['ema_acc1'])} / {_fmt(info['ema_acc5'])}"],
            ["wall time (s)", _fmt(info["wall_time_s"], ".1f")], ["median img/s", _fmt(info["img_s"], ".0f")]]
    return (f'<h2>Summary <span class="status-{html.escape(status)}">({html.escape(status)})</span></h2>'
            + _table(None, rows))


def _environment_section(run_dir: Path) -> str:
    summary = run_dir / "summary.json"
    if summary.is_file():
        env, note = json.loads(summary.read_text()).get("environment", {}), "as stored in summary.json"
    else:
        env, note = environment(), "the run has no summary.json: this is the environment the report was made in"
    return (f"<h2>Environment</h2><p>{html.escape(note)}</p>"
            + _table(None, [[k, "-" if v is None else v] for k, v in env.items()]))


def ablation_sections(ablation_dir: Path, out_dir: Path) -> list[str]:
    """The ablation table and plot, and one row per (step, seed) run with a link to its directory."""
    sections = []
    md = ablation_dir / "ablation.md"
    if md.is_file():
        sections.append("<h2>Ablation table</h2>" + markdown_table_html(md.read_text()))
    png = ablation_dir / "ablation.png"
    if png.is_file():
        sections.append("<h2>Stacked gains</h2>" + _img(base64.b64encode(png.read_bytes()).decode(), "ablation plot"))
    results = read_results(ablation_dir / "results.jsonl")
    runs = {p.resolve(): run_info(p) for p in find_runs(ablation_dir)}
    rows = []
    for r in results:
        link = os.path.relpath(r["run_dir"], out_dir)
        rows.append(f"<tr><td>{html.escape(r['step'])}</td><td>{r['seed']}</td><td>{_fmt(r['acc1'])}</td>"
                    f"<td>{_fmt(r.get('ema_acc1'))}</td><td>{_fmt(r['wall_time_s'], '.0f')}</td>"
                    f"<td>{_fmt(r.get('img_s'), '.0f')}</td>"
                    f'<td><a href="{html.escape(link)}">{html.escape(Path(r["run_dir"]).name)}</a></td></tr>')
    listed = {Path(r["run_dir"]).resolve() for r in results}
    for path, info in runs.items():  # runs without a results line: unfinished or failed
        if path not in listed:
            rows.append(f"<tr><td>{html.escape(info['name'])}</td><td>{info['seed']}</td><td>-</td><td>-</td><td>-</td>"
                        f"<td>-</td><td>{html.escape(info['status'])}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("step", "seed", "test acc@1", "EMA acc@1", "wall time (s)", "img/s", "run"))
    sections.append(f"<h2>Runs ({len(results)} finished)</h2><table><tr>{head}</tr>{''.join(rows)}</table>")
    return sections


def markdown_table_html(text: str) -> str:
    """A Markdown pipe table (as ablation.md holds) as an HTML table; other lines as paragraphs."""
    out, rows = [], []
    for line in text.splitlines():
        if line.strip().startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):  # skip the |---|---| separator
                rows.append(cells)
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    return (_table(rows[0], rows[1:]) if rows else "") + "".join(out)


def write_report(path: str | Path, *, out: str | Path | None = None, samples: int = 16, say=print) -> Path:
    """Write the report of a run directory or an ablation directory; return the HTML file's path."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory: give a run directory or an ablation directory")
    out = Path(out) if out else path / "report.html"
    if is_run_dir(path):
        title, (sections, _) = f"Run {path.name}", run_sections(path, samples=samples, say=say)
    elif (path / "results.jsonl").is_file() or (path / "ablation.md").is_file():
        title, sections = f"Ablation {path.name}", ablation_sections(path, out.parent)
    else:
        raise FileNotFoundError(f"{path} holds neither recipe.toml (a run) nor results.jsonl/ablation.md "
                                "(an ablation); `sotakit runs --root DIR` lists runs")
    out.write_text(page(title, sections))
    return out


def page(title: str, sections: list[str]) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(sections)
            + "\n</body></html>\n")
