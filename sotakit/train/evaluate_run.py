"""Evaluate a run directory or checkpoint (plain and EMA model on the test split); tune its eval resize."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..data import DataBundle, Loaders, cached_bundle, data_fingerprint, load_data, make_loaders, normalized
from ..evaluate import ResizeTuning, evaluate, tta_report, tune_resize
from ..models import build_model
from ..recipes import Recipe, dump_recipe, load_recipe, make_recipe
from .checkpoint import load_checkpoint, load_newest, write_text_atomic
from .ema import build_ema
from .fit import amp_dtype_for, backend_for, validation_split
from .progress import TaskProgress, task_progress
from .recipe_kwargs import (
    amp_kwargs,
    data_cache_kwargs,
    eval_kwargs,
    loader_kwargs,
    model_build_kwargs,
    normalize_kwargs,
    resize_tuning_kwargs,
    tta_kwargs,
)
from .rundir import write_json


@dataclass
class LoadedRun:
    """A checkpoint's models rebuilt with the recipe and data they were trained with."""

    checkpoint: Path
    ckpt: dict
    recipe: Recipe
    bundle: DataBundle
    model: nn.Module
    ema_model: nn.Module | None
    device: torch.device


def load_run(path: str | Path, *, data: str | None = None, data_root: str | None = None) -> LoadedRun:
    """The model (and EMA model) of a run directory's newest verified checkpoint, or of a checkpoint file.

    A run directory means its last checkpoint: the final model, as summary.json reports it. (The
    "best" checkpoint may have been chosen on the test split itself when no --holdout was used.) Its
    val_resize_size is the one in recipe.toml: `tune-resize` may have stored a tuned value there.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_weights_run(path, data=data, data_root=data_root)
    ckpt_path, ckpt = load_newest(path) if path.is_dir() else (path, load_checkpoint(path))
    recipe = make_recipe(**{k: v for k, v in ckpt["recipe"].items()})
    if path.is_dir() and (path / "recipe.toml").exists():
        recipe = recipe.replace(val_resize_size=load_recipe(path / "recipe.toml").val_resize_size)
    bundle = normalized(load_data(data or recipe.data, data_root or recipe.data_root, progress=task_progress),
                        **normalize_kwargs(recipe))
    if list(bundle.classes) != list(ckpt["classes"]):
        raise ValueError(f"{ckpt_path} was trained on classes {ckpt['classes'][:5]}... "
                         f"({len(ckpt['classes'])}); {bundle.name} has {bundle.classes[:5]}... "
                         f"({len(bundle.classes)}). Evaluate on data with the same classes.")
    device = torch.device(backend_for(recipe.device))
    model = build_model(**model_build_kwargs(recipe, num_classes=len(ckpt["classes"]),
                                             native_size=ckpt.get("native_size", bundle.native_size)))
    model.load_state_dict(ckpt["model"])
    model.to(device)
    ema_model = None
    if ckpt.get("ema") is not None:
        ema = build_ema(model, decay=0.0, device=device)
        ema.load_state_dict(ckpt["ema"])
        ema_model = ema.module
    return LoadedRun(ckpt_path, ckpt, recipe, bundle, model, ema_model, device)


def load_weights_run(path: Path, *, data: str | None = None, data_root: str | None = None) -> LoadedRun:
    """A weights file's model as a LoadedRun: its recipe and data from the meta, no EMA model (the file
    holds the one model it reports); ``ckpt`` carries the epoch and classes `eval` prints."""
    from ..evaluate.weights import Weights
    from ..evaluate.weights import build_model as build_from_weights
    w = Weights.from_file(path)
    recipe = make_recipe(**{**w.meta["recipe"], "val_resize_size": w.meta["preprocessing"]["resize_size"]})
    bundle = load_data(data or recipe.data, data_root or recipe.data_root, progress=task_progress)
    if list(bundle.classes) != list(w.categories):
        raise ValueError(f"{path} holds a model of {len(w.categories)} classes ({', '.join(w.categories[:5])}"
                         f"...); {bundle.name} has {len(bundle.classes)}. Evaluate on data with the same "
                         "classes.")
    device = torch.device(backend_for(recipe.device))
    model = build_from_weights(weights=w).to(device)
    ckpt = {"epoch": w.meta["source"].get("epoch") if w.meta.get("source") else None, "classes": w.categories}
    return LoadedRun(path, ckpt, recipe, bundle, model, None, device)


def run_loaders(recipe: Recipe, bundle: DataBundle, *, batch_size: int | None = None,
                val_resize_size: int | None = None, workers: int | None = None) -> Loaders:
    """The loaders fit() builds for ``recipe`` (same subsets, folds, transforms, mixing and seed), one
    process; at most one worker unless ``workers`` says otherwise (evaluation is short)."""
    workers = min(recipe.workers, 1) if workers is None else workers
    changes = {"batch_size": batch_size, "val_resize_size": val_resize_size}
    return make_loaders(bundle, **{**loader_kwargs(recipe), "workers": workers,
                                   **{k: v for k, v in changes.items() if v}})


def evaluate_checkpoint(path: str | Path, *, data: str | None = None, data_root: str | None = None,
                        batch_size: int | None = None, val_resize_size: int | None = None,
                        tta: str | None = None, tta_beta: float | None = None) -> dict:
    """acc@1/acc@5 of the checkpoint's model (and EMA) on the test split of its data (or ``data``).

    ``tta`` (N passes or "flip"; default: the recipe's) adds ``test_tta`` (and ``test_ema_tta``) beside the
    plain figures, never in place of them.
    """
    run = load_run(path, data=data, data_root=data_root)
    resize = val_resize_size or run.recipe.val_resize_size
    bundle = run.bundle
    if resize == run.recipe.val_resize_size:  # the run's data cache, if it has one: what fit evaluated on
        bundle, _ = cached_bundle(bundle, **data_cache_kwargs(run.recipe),
                                  fingerprint=data_fingerprint(bundle), build=False)
    loaders = run_loaders(run.recipe, bundle, batch_size=batch_size, val_resize_size=resize)
    # In the precision the run evaluated in (bf16 autocast with --amp or the machine probe's choice), so
    # the figures are the recorded ones; float32 where this machine cannot.
    amp_dtype, _ = amp_dtype_for(**amp_kwargs(run.recipe), device=run.device)
    on = {"device": run.device, "amp_dtype": amp_dtype}
    out = {"checkpoint": str(run.checkpoint), "data": run.bundle.name, "epoch": run.ckpt["epoch"],
           "val_resize_size": resize, "val_crop_size": run.recipe.val_crop_size,
           "test": evaluate(run.model, loaders.test, **on, **eval_kwargs(run.recipe),
                            progress=TaskProgress("evaluating the model on test", unit="batches"))}
    if run.ema_model is not None:
        out["test_ema"] = evaluate(run.ema_model, loaders.test, **on, **eval_kwargs(run.recipe),
                                   progress=TaskProgress("evaluating the EMA model on test", unit="batches"))
    changes = {k: v for k, v in (("tta", tta), ("tta_beta", tta_beta)) if v is not None}
    out.update(tta_report(run.model, loaders.test, ema_model=run.ema_model, **on,
                          **tta_kwargs(make_recipe(run.recipe, **changes))))
    return out


def tune_run_resize(run_dir: str | Path, *, sizes: list[int] | None = None, seed: int = 0,
                    say=None) -> tuple[ResizeTuning, str]:
    """Tune the run's eval resize on half of its validation data, confirm on the other half, store it.

    The validation data is the run's holdout (or K-fold validation fold) when it has one, else its
    test split (as `eval` sees it). The EMA model is tuned when the run has one (the model reported).
    The choice is written to recipe.toml (atomically) when half B confirms it, and the whole result
    to tune_resize.json; returns the result and the split used. ``say`` gets a line per size (default:
    the "sotakit" logger).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.toml").exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no recipe.toml); pass runs/<run>")
    run = load_run(run_dir)
    recipe = run.recipe
    loader, split = validation_split(run_loaders(recipe, run.bundle))
    ds = loader.dataset
    result = tune_resize(run.ema_model or run.model, ds.source, ds.indices,
                         **resize_tuning_kwargs(recipe, sizes=sizes), mean=run.bundle.mean,
                         std=run.bundle.std, seed=seed, device=run.device, say=say,
                         progress=TaskProgress("tuning the resize", unit="evaluations"))
    doc = tomllib.loads((run_dir / "recipe.toml").read_text())
    text = dump_recipe(load_recipe(run_dir / "recipe.toml").replace(val_resize_size=result.stored),
                       doc.get("meta"))
    write_text_atomic(run_dir / "recipe.toml", text)
    write_json(run_dir / "tune_resize.json", {**asdict(result), "split": split, "seed": seed,
                                              "model": "ema" if run.ema_model is not None else "model"})
    return result, split
