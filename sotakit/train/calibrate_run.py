"""`sotakit calibrate RUN`: temperature scaling fitted on the run's holdout split, never on test.

The model calibrated is the one in the run's weights file (``model_choice``). The temperature and the
ECE/NLL/Brier before and after (holdout and test) go to ``calibration.json``; the weights file is
written again with ``temperature`` and ``calibration`` in its meta, which `predict` applies.
"""

from __future__ import annotations

from pathlib import Path

from ..evaluate.calibration import calibration_metrics, collect_logits, fit_temperature
from ..evaluate.weights import WEIGHTS_FILE, read_meta
from ..recipes import load_recipe
from .evaluate_run import load_run, run_loaders
from .fit import validation_split
from .run_weights import export_run_weights
from .rundir import write_json

CALIBRATION_FILE = "calibration.json"
NO_HOLDOUT = ("{run_dir} has no holdout split, and the temperature is never fitted on test: train with "
              "--holdout 0.1 (or --kfold K --fold F), then calibrate")


def _summary(m: dict) -> dict:
    return {k: m[k] for k in ("ece", "nll", "brier")}


def calibrate_run(run_dir: str | Path) -> dict:
    """Fit the temperature of the run's weights-file model on its holdout; return calibration.json."""
    run_dir = Path(run_dir)
    if (run_dir / "recipe.toml").is_file() and not (r := load_recipe(run_dir / "recipe.toml")).holdout \
            and not r.kfold:  # said before any data is read
        raise ValueError(NO_HOLDOUT.format(run_dir=run_dir))
    if not (run_dir / WEIGHTS_FILE).is_file():
        export_run_weights(run_dir)  # a run that finished before weights files existed
    which = read_meta(run_dir / WEIGHTS_FILE)["model_choice"]["model"]
    run = load_run(run_dir)
    model = run.ema_model if which == "ema" else run.model
    loaders = run_loaders(run.recipe, run.bundle)
    loader, split = validation_split(loaders)
    if split != "holdout":
        raise ValueError(NO_HOLDOUT.format(run_dir=run_dir))
    hold_logits, hold_y = collect_logits(model, loader, device=run.device)
    test_logits, test_y = collect_logits(model, loaders.test, device=run.device)
    t = fit_temperature(hold_logits, hold_y)
    result = {"temperature": t, "model": which, "fitted_on": "holdout", "holdout_n": len(hold_y),
              "test_n": len(test_y),
              "holdout_before": _summary(calibration_metrics(hold_logits, hold_y)),
              "holdout_after": _summary(calibration_metrics(hold_logits / t, hold_y)),
              "test_before": _summary(calibration_metrics(test_logits, test_y)),
              "test_after": _summary(calibration_metrics(test_logits / t, test_y))}
    write_json(run_dir / CALIBRATION_FILE, result)
    export_run_weights(run_dir)  # picks calibration.json up: temperature and calibration in the meta
    return result
