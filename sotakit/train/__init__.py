"""The engine: optimizer and schedule builders, EMA, one epoch, checkpoints, DDP, run directory, fit()."""

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .ema import build_ema, update_ema
from .fit import FitResult, fit
from .loop import Interrupted, NonFiniteLossError, train_one_epoch
from .optim import build_optimizer, build_scheduler, param_groups

__all__ = ["FitResult", "Interrupted", "NonFiniteLossError", "build_ema", "build_optimizer", "build_scheduler",
           "fit", "load_checkpoint", "param_groups", "rng_state", "save_checkpoint", "set_rng_state",
           "train_one_epoch", "update_ema"]
