"""`sotakit data show` and `sotakit interpret`: look at what the model is fed and what it gets wrong.

``write_sample_grid`` draws the recipe's first training batch (its augmentation and mixing) with the
(mixed) labels; ``interpret_run`` is fastai's ClassificationInterpretation for a run: the confusion
matrix, the most confused class pairs and the test images with the highest loss. The report shows both.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data import load_data, normalized
from ..evaluate import confusion_matrix
from ..evaluate.interpret import Predictions, TopLoss, most_confused, predictions, top_losses
from ..recipes import Recipe, resolve, training_images
from ..train.evaluate_run import load_run, run_loaders
from ..train.progress import task_progress
from ..train.recipe_kwargs import data_epoch_kwargs, normalize_kwargs
from .report import _pyplot, confusion_figure, sample_grid_figure


def write_sample_grid(recipe: Recipe, out: str | Path, *, count: int = 16) -> Path:
    """The recipe's first training batch on its data (resolved as `train` would) as a PNG grid."""
    bundle = normalized(load_data(recipe.data, recipe.data_root, progress=task_progress),
                        **normalize_kwargs(recipe))
    recipe, _ = resolve(recipe, native_size=bundle.native_size,
                        train_images=training_images(len(bundle.train), recipe))
    loaders = run_loaders(recipe, bundle, workers=0)
    fig = sample_grid_figure(loaders, list(bundle.classes), bundle.mean, bundle.std,
                             **data_epoch_kwargs(recipe, epoch=0), count=count)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    _pyplot().close(fig)
    return out


def top_losses_figure(dataset, tops: list[TopLoss], classes: list[str]):
    """The images of ``tops`` (positions in ``dataset``, eval transform) titled predicted/true/loss/p."""
    plt = _pyplot()
    cols = min(3 if len(tops) <= 9 else 5, max(1, len(tops)))
    rows = max(1, (len(tops) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, t in zip(axes.flat, tops):
        image = dataset[t.index][0]
        x = image.float().div(255)
        ax.imshow(x.expand(3, -1, -1).permute(1, 2, 0).numpy())  # grayscale shown as RGB
        title = f"{classes[t.pred]} / {classes[t.target]}\nloss {t.loss:.2f}, p {t.prob:.2f}"
        ax.set_title(title, fontsize=7)
    fig.suptitle("predicted / true, loss, probability of the prediction", fontsize=8)
    fig.tight_layout()
    return fig


def interpretation(model, loader, classes: list[str], *, device, top: int = 9) -> tuple[Predictions, dict]:
    """Predictions of ``model`` on ``loader`` and what `interpret` reports about them (plain values)."""
    p = predictions(model, loader, device=device)
    cm = confusion_matrix(p.preds, p.targets, len(classes))
    tops = top_losses(p, top)
    return p, {"cm": cm, "most_confused": most_confused(p, classes), "top_losses": tops}


def interpret_run(run_dir: str | Path, *, out: str | Path | None = None, top: int = 9) -> dict:
    """confusion.png, top_losses.png and interpret.json for the run's last checkpoint on its test split
    (the EMA model when the run has one, as `tune-resize`), in ``out`` (default: the run directory)."""
    run = load_run(run_dir)
    out = Path(out or run_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaders = run_loaders(run.recipe, run.bundle)
    classes = list(run.bundle.classes)
    label, model = ("EMA model", run.ema_model) if run.ema_model is not None else ("model", run.model)
    _, found = interpretation(model, loaders.test, classes, device=run.device, top=top)
    plt = _pyplot()
    figures = {"confusion.png": confusion_figure(found["cm"], classes, f"{label} (rows: true class)"),
               "top_losses.png": top_losses_figure(loaders.test.dataset, found["top_losses"], classes)}
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
    doc = {"model": label, "images": int(found["cm"].sum()),
           "acc1": 100 * found["cm"].diagonal().sum().item() / max(1, int(found["cm"].sum())),
           "most_confused": found["most_confused"],
           "top_losses": [{"index": t.index, "predicted": classes[t.pred], "true": classes[t.target],
                           "loss": t.loss, "probability": t.prob} for t in found["top_losses"]]}
    (out / "interpret.json").write_text(json.dumps(doc, indent=1) + "\n")
    return {**doc, "out": str(out)}

