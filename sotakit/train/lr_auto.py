"""``--lr auto``: run the range test on the run's own model, data and optimizer, then train at its valley."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..data import load_data, make_loaders, normalized, set_data_epoch
from ..models import build_model
from ..recipes import Recipe, resolve, training_images
from .lr_finder import LRFindError, LRFindResult, lr_find, shared_lr_find, write_lr_find
from .optim import build_optimizer, param_groups
from .progress import task_progress
from .recipe_kwargs import (
    amp_kwargs,
    criterion_kwargs,
    data_epoch_kwargs,
    loader_kwargs,
    lr_find_kwargs,
    model_build_kwargs,
    model_kwargs,
    normalize_kwargs,
    optimizer_kwargs,
    param_group_kwargs,
)


def choose_lr(recipe: Recipe, model, loader, optimizer, *, criterion, device, amp_dtype=None, scaler=None,
              **find_kw) -> tuple[Recipe, str]:
    """The recipe with ``lr`` = the valley suggestion (set in ``optimizer`` too) and the note saying so.

    Under DDP the test runs on rank 0 and every rank trains at its result (``shared_lr_find``); the model
    and everything else come back as they were, so the run equals one started with that ``--lr``.
    """
    result: LRFindResult = shared_lr_find(model, loader, optimizer, criterion=criterion, device=device,
                                          amp_dtype=amp_dtype, scaler=scaler, **lr_find_kwargs(recipe),
                                          **find_kw)
    lr = result.valley
    for group in optimizer.param_groups:
        group["lr"] = lr
    note = f"--lr auto: {result.summary()}; training at the valley, lr {lr:.4g}"
    return recipe.replace(lr=lr), note


def check_one_process() -> None:
    """`sotakit lr-find` under torchrun: refused before any work (fastai #3688: the test deadlocked DDP)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise LRFindError("lr-find runs on one process: run `sotakit lr-find` without torchrun, then train "
                          "under torchrun with --lr VALUE (or `train --lr auto`, which runs it on rank 0)")


def lr_find_for_recipe(recipe: Recipe, *, out: str | Path | None = None,
                       **find_kw) -> tuple[LRFindResult, Recipe]:
    """`sotakit lr-find`: the range test on the model, data, optimizer and precision ``fit`` would build for
    ``recipe`` (resolved for the data and machine); lr_find.json and lr_find.png go to ``out``."""
    from .fit import amp_dtype_for, prepare_model, run_device  # fit imports this module for --lr auto
    check_one_process()
    bundle = normalized(load_data(recipe.data, recipe.data_root, progress=task_progress),
                        **normalize_kwargs(recipe))
    recipe, _ = resolve(recipe, native_size=bundle.native_size, cuda_available=torch.cuda.is_available(),
                        train_images=training_images(len(bundle.train), recipe))
    device = run_device(recipe.device)
    amp_dtype, _ = amp_dtype_for(**amp_kwargs(recipe), device=device)
    torch.manual_seed(recipe.seed)
    model = build_model(**model_build_kwargs(recipe, num_classes=len(bundle.classes),
                                             native_size=bundle.native_size))
    model = prepare_model(model, **model_kwargs(recipe), device=device)
    loaders = make_loaders(bundle, **loader_kwargs(recipe), pin_memory=device.type == "cuda")
    set_data_epoch(loaders, epoch=0, skip_batches=0, **data_epoch_kwargs(recipe, epoch=0))
    optimizer = build_optimizer(param_groups(model, **param_group_kwargs(recipe)), **optimizer_kwargs(recipe))
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 and device.type == "cuda" else None
    criterion = nn.CrossEntropyLoss(**criterion_kwargs(recipe))
    result = lr_find(model, loaders.train, optimizer, criterion=criterion, device=device, amp_dtype=amp_dtype,
                     scaler=scaler, **lr_find_kwargs(recipe), **find_kw)
    if out is not None:
        write_lr_find(result, out)
    return result, recipe
