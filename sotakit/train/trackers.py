"""Optional experiment trackers (MLflow, Weights & Biases) fed from the same records as metrics.jsonl.

The run directory stays the source of truth; a tracker is a copy for people who browse runs there.
Each tracker is three calls: the recipe once, one dict of scalars per record (and the final metrics,
``final/test_acc1`` ..., at the last step), and a close. MLflow writes to MLFLOW_TRACKING_URI, else to a
file store ``mlruns/`` beside ``runs/``. W&B runs offline (files under the run directory, nothing sent)
unless the user set WANDB_MODE themselves.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

TRACKERS = ("mlflow", "wandb")


def require(name: str):
    """The tracker's module, or an error saying how to install it."""
    if name not in TRACKERS:
        raise ValueError(f"--tracker {name}: unknown tracker; choose one of {', '.join(TRACKERS)}")
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ValueError(f"--tracker {name} needs the {name} package: pip install {name} "
                         "(or drop --tracker; metrics.jsonl and TensorBoard are always written)") from None


def mlflow_uri(run_dir: Path) -> str:
    """Where MLflow stores the run: MLFLOW_TRACKING_URI when set, else a file store ``mlruns/`` beside
    ``runs/`` (what mlflow-skinny can write without a server or SQLAlchemy; mlflow 3 keeps it behind
    MLFLOW_ALLOW_FILE_STORE, set here for that store only)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (Path(run_dir).resolve().parent.parent / "mlruns").as_uri()


class Tracker:
    """One run in MLflow or W&B: ``log_params`` once, ``log(scalars, step)`` per record, ``close``."""

    def __init__(self, name: str, *, run_dir: Path, params: dict[str, Any]):
        self.name, self.mod = name, require(name)
        if name == "mlflow":
            self.mod.set_tracking_uri(mlflow_uri(run_dir))
            self.mod.start_run(run_name=Path(run_dir).name)
            # MLflow params are strings; unset (None) fields are left out as in recipe.toml
            self.mod.log_params({k: v for k, v in params.items() if v is not None})
        else:
            os.environ.setdefault("WANDB_MODE", "offline")
            self.run = self.mod.init(project="sotakit", name=Path(run_dir).name, dir=str(run_dir),
                                     config=params, mode=os.environ["WANDB_MODE"])

    def log(self, scalars: dict[str, float], *, step: int) -> None:
        if self.name == "mlflow":
            self.mod.log_metrics(scalars, step=step)
        else:
            self.run.log(scalars, step=step)

    def close(self) -> None:
        if self.name == "mlflow":
            self.mod.end_run()
        else:
            self.run.finish()
