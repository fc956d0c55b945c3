"""The engine: the helpers fit() is made of, each public so a copy of fit() runs as a loop of your own.

Recipe -> keyword arguments (recipe_kwargs), optimizer and schedule builders (optim), EMA, one
epoch (loop), checkpoints and the saver (checkpoint, state), resume (resume), stops and failures
(stops), DDP (distributed), the run directory (rundir), progress, and fit() itself.
"""

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .distributed import DistInfo, all_ranks, barrier, init_distributed
from .ema import build_ema, update_ema
from .fit import (
    FitResult,
    amp_dtype_for,
    backend_for,
    epoch_line,
    epoch_record,
    final_evaluation,
    fit,
    log_step,
    prepare_model,
    run_banner,
    run_device,
    run_summary,
    set_backend_flags,
    validation_split,
    wrap_ddp,
)
from .loop import Interrupted, NonFiniteLossError, train_one_epoch
from .optim import build_optimizer, build_scheduler, param_groups
from .progress import RunProgress
from .recipe_kwargs import (
    amp_kwargs,
    backend_kwargs,
    criterion_kwargs,
    data_epoch_kwargs,
    ema_kwargs,
    epoch_kwargs,
    eval_kwargs,
    loader_kwargs,
    model_build_kwargs,
    model_kwargs,
    optimizer_kwargs,
    param_group_kwargs,
    run_warnings,
    saver_kwargs,
    scheduler_kwargs,
    train_crop_at,
)
from .resume import ResumeMismatchError, ResumePoint, check_resume, find_resume_point
from .rundir import MetricsLog, environment, finish_run, open_run_dir, run_lifecycle
from .state import CheckpointSaver, RunTotals, restore_state, run_meta, training_state
from .stops import RunError, StopRequest, failures_as_run_errors

__all__ = ["CheckpointSaver", "DistInfo", "FitResult", "Interrupted", "MetricsLog", "NonFiniteLossError",
           "ResumeMismatchError", "ResumePoint", "RunError", "RunProgress", "RunTotals", "StopRequest",
           "all_ranks", "amp_dtype_for", "amp_kwargs", "backend_for", "backend_kwargs", "barrier",
           "build_ema", "build_optimizer", "build_scheduler", "check_resume", "criterion_kwargs",
           "data_epoch_kwargs", "ema_kwargs", "environment", "epoch_kwargs", "epoch_line", "epoch_record",
           "eval_kwargs", "failures_as_run_errors", "final_evaluation", "find_resume_point", "finish_run",
           "fit", "init_distributed", "load_checkpoint", "loader_kwargs", "log_step", "model_build_kwargs",
           "model_kwargs", "open_run_dir", "optimizer_kwargs", "param_group_kwargs", "param_groups",
           "prepare_model", "restore_state", "rng_state", "run_banner", "run_device", "run_lifecycle",
           "run_meta", "run_summary", "run_warnings", "save_checkpoint", "saver_kwargs", "scheduler_kwargs",
           "set_backend_flags", "set_rng_state", "train_crop_at", "train_one_epoch", "training_state",
           "update_ema", "validation_split", "wrap_ddp"]
