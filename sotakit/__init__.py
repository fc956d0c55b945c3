"""sotakit: train state-of-the-art image classifiers with PyTorch, and measure what each technique is worth.

The public helper API, for people who write their own loop::

    from sotakit import build_model, make_loaders, build_optimizer, train_one_epoch, evaluate
"""

from ._version import __version__ as __version__  # `as`: an explicit re-export (F401)
from .data import load_data, make_loaders
from .evaluate import evaluate
from .models import build_model, list_models, register_model
from .recipes import Recipe, load_preset, load_recipe, make_recipe
from .train import (
    build_ema,
    build_optimizer,
    build_scheduler,
    fit,
    load_checkpoint,
    param_groups,
    save_checkpoint,
    train_one_epoch,
)
from .train.lr_finder import LRFindResult, lr_find

__all__ = ["LRFindResult", "Recipe", "build_ema", "build_model", "build_optimizer", "build_scheduler",
           "evaluate", "fit", "list_models", "load_checkpoint", "load_data", "load_preset", "load_recipe",
           "lr_find", "make_loaders", "make_recipe", "param_groups", "register_model", "save_checkpoint",
           "train_one_epoch"]
