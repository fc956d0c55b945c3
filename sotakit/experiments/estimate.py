"""A rough time estimate for an ablation or sweep, from a short measured warm-up (for --dry-run).

Each distinct (model, train crop, batch size) trains a few steps in this process after untimed
warm-up steps (airbench: "a warm-up run not counted in timing"); the time per training image,
times the images every run processes, plus each run's start-up (a measured Python + sotakit import
and data load: every run is its own process), divided by the jobs running at once, is the estimate.
Rough by design: evaluation is counted at a third of a training image (a forward pass without the
backward), other augmentations' cost and the jobs' contention for memory bandwidth are ignored.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from ..data import load_data, make_loaders
from ..models import build_model
from ..recipes import Recipe, load_recipe, resolve
from ..train import build_optimizer, param_groups
from ..train.recipe_kwargs import (
    criterion_kwargs,
    loader_kwargs,
    model_build_kwargs,
    optimizer_kwargs,
    param_group_kwargs,
)
from .runner import Entry, folds_of

EVAL_COST = 1 / 3  # an evaluated image costs about a third of a trained one (forward only)


@dataclass(frozen=True)
class RunCost:
    key: tuple[str, int, int]  # (model, train crop size, batch size): what the speed depends on
    train_images: int  # images trained on over the whole run
    eval_images: int  # images evaluated over the whole run


def run_cost(recipe: Recipe, *, n_train: int, n_test: int) -> RunCost:
    """Images one run trains and evaluates: epochs x training set, the validation split every epoch
    (EMA model too), and the final holdout and test evaluation. ``recipe`` is resolved for its data."""
    pool = min(recipe.train_limit, n_train) if recipe.train_limit else n_train
    test = min(recipe.test_limit, n_test) if recipe.test_limit else n_test
    if recipe.kfold:
        val = round(pool / recipe.kfold)
    else:
        val = round(recipe.holdout * pool)
    models = 2 if recipe.model_ema else 1
    per_epoch_eval = val or test  # without a holdout the test split is evaluated every epoch
    eval_images = models * (recipe.epochs * per_epoch_eval + val + test)
    return RunCost((recipe.model, recipe.train_crop_size, recipe.batch_size), recipe.epochs * (pool - val),
                   eval_images)


def estimate_seconds(costs: list[RunCost], seconds_per_image: dict[tuple, float], *, jobs: int,
                     startup_s: float = 0.0) -> float:
    """Sum over runs of (train images + eval images / 3) x seconds per training image + start-up,
    over jobs."""
    total = sum((c.train_images + EVAL_COST * c.eval_images) * seconds_per_image[c.key] + startup_s
                for c in costs)
    return total / max(1, jobs)


def measure_startup_s(data: str, data_root: str | None) -> float:
    """Seconds a run spends before training: a fresh interpreter importing sotakit, plus loading the data."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sotakit.train"], check=True, capture_output=True)
    t1 = time.perf_counter()
    load_data(data, data_root)
    return time.perf_counter() - t1 + (t1 - t0)


class TooFewImagesError(ValueError):
    """The training set is smaller than the steps a time estimate measures."""


def measure_seconds_per_image(recipe: Recipe, bundle, *, warmup: int = 2, steps: int = 8) -> float:
    """Seconds per training image of ``recipe`` (resolved) over ``steps`` steps after ``warmup``
    untimed ones."""
    torch.manual_seed(0)
    model = build_model(**model_build_kwargs(recipe, num_classes=len(bundle.classes),
                                             native_size=bundle.native_size))
    optimizer = build_optimizer(param_groups(model, **param_group_kwargs(recipe)), **optimizer_kwargs(recipe))
    # The run's own pipeline (every augmentation it pays for), on just enough images, all of them trained.
    limit = recipe.batch_size * (warmup + steps + 1)
    loaders = make_loaders(bundle, **{**loader_kwargs(recipe), "train_limit": limit, "holdout": 0.0,
                                      "kfold": 0})
    criterion = torch.nn.CrossEntropyLoss(**criterion_kwargs(recipe))
    model.train()
    images, start = 0, None
    for i, (x, y) in enumerate(loaders.train):
        if i == warmup:
            start = time.perf_counter()  # warm-up steps (allocation, kernel choice) are not counted
        if i == warmup + steps:
            break
        loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        images += len(x) if i >= warmup else 0
    if start is None or not images:
        raise TooFewImagesError(f"too few training images to time {warmup + steps} steps of batch "
                         f"{recipe.batch_size}")
    return (time.perf_counter() - start) / images


def estimate_entries(entries: list[Entry], *, seeds: int, jobs: int, say=None,
                     measure=None, startup=None) -> tuple[float, dict[tuple, float], float]:
    """Estimated seconds for every (entry, seed, fold), the measured seconds per image of each config
    and the measured start-up seconds of one run; ``say`` is told what is timed (default: the logger)."""
    say = say or logging.getLogger("sotakit.experiments").info
    measure, startup = measure or measure_seconds_per_image, startup or measure_startup_s
    recipes = [load_recipe(path) for _, _, path in entries]
    say("timing a run's start-up (import and data load) ...")
    startup_s = startup(recipes[0].data, recipes[0].data_root)
    bundle = load_data(recipes[0].data, recipes[0].data_root)
    costs, per_image = [], {}
    threads = torch.get_num_threads()
    # Each job gets its share of the cores (as the runner gives it), so time with that many threads.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, jobs)))
    try:
        for recipe in recipes:
            r, _ = resolve(recipe, native_size=bundle.native_size)
            cost = run_cost(r, n_train=len(bundle.train), n_test=len(bundle.test))
            if cost.key not in per_image:
                say(f"timing {cost.key[0]} at {cost.key[1]}px, batch {cost.key[2]} ...")
                if not per_image:  # the first training in a process pays one-off costs (threads, allocator)
                    measure(r, bundle)
                per_image[cost.key] = measure(r, bundle)
            costs += [cost] * (seeds * len(folds_of(recipe)))
    finally:
        torch.set_num_threads(threads)
    return estimate_seconds(costs, per_image, jobs=jobs, startup_s=startup_s), per_image, startup_s


def format_duration(seconds: float) -> str:
    m = round(seconds / 60)
    return f"{seconds:.0f}s" if seconds < 90 else (f"{m}min" if m < 90 else f"{m // 60}h{m % 60:02d}min")
