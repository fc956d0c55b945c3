"""Inputs that would train silently wrong, or fail only after the data load: refused before training,
each with what to do instead. fit() calls them in order: the output folder before the data is read,
the classes after, the splits once the loaders exist."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import torch

from ..recipes import RecipeError
from .rundir import runs_root


def check_output_dir(output_dir: str | Path) -> None:
    """``--output-dir`` can hold run folders: a file there, a read-only mount or no permission is said
    now, not after the whole data load (a real write is tried: root passes permission checks)."""
    runs = runs_root(output_dir)
    created, p = [], runs  # the folders the probe makes are removed again: a refused run leaves none
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    try:
        runs.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=runs)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RecipeError(f"--output-dir {output_dir} cannot hold runs ({runs}: {e.strerror or e}): give a "
                          "writable folder") from None
    finally:
        for folder in created:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()


def check_classes(classes: list[str], *, data: str) -> None:
    """A classifier of one class reaches 100% without learning anything."""
    if len(classes) < 2:
        raise RecipeError(f"{data} has {len(classes)} class ({', '.join(classes) or 'none'}): a classifier "
                          "needs at least two class folders")


def check_splits(loaders, *, classes: list[str], holdout: float, steps_per_epoch: int) -> None:
    """The holdout holds images when asked for, every class trains, and an epoch has a step."""
    train = loaders.train.dataset
    n_train = len(train)
    if holdout > 0 and (loaders.holdout is None or len(loaders.holdout.dataset) == 0):
        n = n_train + (len(loaders.holdout.dataset) if loaders.holdout is not None else 0)
        least = min(0.5, len(classes) / n)
        raise RecipeError(f"--holdout {holdout:g} of {n} training images is 0 images: the best checkpoint "
                          f"would be chosen on the test split; use --holdout {least:.3g} or more, or no "
                          "--holdout")
    counts = torch.bincount(train.source.targets[train.indices], minlength=len(classes))
    unseen = [c for c, k in zip(classes, counts.tolist()) if k == 0]
    if unseen:
        shown = ", ".join(unseen[:5]) + (f" and {len(unseen) - 5} more" if len(unseen) > 5 else "")
        raise RecipeError(f"{len(unseen)} of {len(classes)} classes have no training image ({shown}) after "
                          "--holdout/--train-limit and the unreadable files: the model could never learn "
                          "them; lower --holdout, add images, or remove those class folders")
    if steps_per_epoch == 0:
        raise RecipeError(f"the training set has {n_train} image(s): its only batch holds one image, which "
                          "is dropped (BatchNorm cannot train on one), so no step would run; add images")
