"""Evaluate a run directory or checkpoint: the plain and the EMA model on the test split."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import load_data, make_loaders
from ..evaluate import evaluate
from ..models import build_model
from ..recipes import make_recipe
from .checkpoint import load_checkpoint
from .ema import build_ema


def evaluate_checkpoint(path: str | Path, *, data: str | None = None, data_root: str | None = None,
                        batch_size: int | None = None, val_resize_size: int | None = None) -> dict:
    """acc@1/acc@5 of the checkpoint's model (and EMA) on the test split of its data (or ``data``).

    A run directory means its last checkpoint: the final model, as summary.json reports it. (The
    "best" checkpoint may have been chosen on the test split itself when no --holdout was used.)
    """
    path = Path(path)
    ckpt_path = path / "checkpoint-last.pt" if path.is_dir() else path
    ckpt = load_checkpoint(ckpt_path)
    recipe = make_recipe(**{k: v for k, v in ckpt["recipe"].items()})
    bundle = load_data(data or recipe.data, data_root or recipe.data_root)
    if list(bundle.classes) != list(ckpt["classes"]):
        raise ValueError(f"{ckpt_path} was trained on classes {ckpt['classes'][:5]}... ({len(ckpt['classes'])}); "
                         f"{bundle.name} has {bundle.classes[:5]}... ({len(bundle.classes)}). "
                         "Evaluate on data with the same classes.")
    device = torch.device("cuda" if torch.cuda.is_available() and recipe.device.startswith("cuda") else "cpu")
    model = build_model(recipe.model, num_classes=len(ckpt["classes"]), small_input=ckpt.get("native_size", bundle.native_size) <= 64)
    model.load_state_dict(ckpt["model"])
    model.to(device)
    loaders = make_loaders(bundle, batch_size=batch_size or recipe.batch_size, train_crop_size=recipe.train_crop_size,
                           val_resize_size=val_resize_size or recipe.val_resize_size,
                           val_crop_size=recipe.val_crop_size, interpolation=recipe.interpolation,
                           workers=min(recipe.workers, 1), seed=recipe.seed, test_limit=recipe.test_limit)
    out = {"checkpoint": str(ckpt_path), "data": bundle.name, "epoch": ckpt["epoch"],
           "test": evaluate(model, loaders.test, device=device)}
    if ckpt.get("ema") is not None:
        ema = build_ema(model, decay=0.0, device=device)
        ema.load_state_dict(ckpt["ema"])
        out["test_ema"] = evaluate(ema.module, loaders.test, device=device)
    return out
