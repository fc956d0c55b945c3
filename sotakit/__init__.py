"""sotakit: train state-of-the-art image classifiers with PyTorch, and measure what each technique is worth.

The public helper API, for people who write their own loop::

    from sotakit import build_model, make_loaders, build_optimizer, train_one_epoch, evaluate

and the helpers around a loop of your own (examples/own_loop.py, examples/lr_find.py): ``lr_find``,
``MetricAggregator``, ``MetricLogger``, ``Checkpoints`` with ``save_if=improved("val.acc1")``,
``ProgressBars``; and the weights of a finished run, as torchvision's multi-weight API::

    w = sotakit.Weights.from_file("runs/<run>/weights.safetensors")
    model = sotakit.build_model(w.meta["arch"], weights=w).eval()
    batch = w.transforms()(image).unsqueeze(0)
"""

from ._version import __version__ as __version__  # `as`: an explicit re-export (F401)
from .data import load_data, make_loaders
from .evaluate import evaluate
from .evaluate.predict import predict
from .evaluate.weights import Weights, build_model, load_model
from .models import list_models, register_model
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
from .train.loop_helpers import Checkpoints, MetricAggregator, MetricLogger, ProgressBars, improved, prefixed
from .train.lr_finder import LRFindResult, lr_find

__all__ = ["Checkpoints", "LRFindResult", "MetricAggregator", "MetricLogger", "ProgressBars", "Recipe",
           "Weights", "build_ema", "build_model", "build_optimizer", "build_scheduler", "evaluate", "fit",
           "improved", "list_models", "load_checkpoint", "load_data", "load_model", "load_preset",
           "load_recipe", "lr_find", "make_loaders", "make_recipe", "param_groups", "predict", "prefixed",
           "register_model", "save_checkpoint",
           "train_one_epoch"]
