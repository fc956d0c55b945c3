"""A run's weights file: the model it reports, with the meta that says what it is (evaluate/weights.py).

Written at the end of every finished run (``weights.safetensors`` in the run directory) and on demand
by `sotakit export-weights RUN`. Which model goes in: the EMA or the plain one, whichever has the
higher acc@1 on the holdout split (a tie keeps the plain one); without a holdout the final plain
model, and the meta says the choice was not made on any data, so never on test.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..evaluate.weights import WEIGHTS_FILE, min_input_size, model_counts, read_meta, write_weights
from ..recipes import load_recipe, make_recipe
from .checkpoint import load_newest
from .recipe_kwargs import model_build_kwargs

log = logging.getLogger("sotakit")

METRIC_NAMES = {"acc1": "acc@1", "acc5": "acc@5", "n": "n", "loss": "loss", "ece": "ece", "nll": "nll",
                "brier": "brier"}


def ema_weights(ema_state: dict) -> dict:
    """The model tensors of an EMA's (``AveragedModel``) state dict: ``module.`` removed, counter dropped."""
    return {k[len("module."):]: v for k, v in ema_state.items() if k.startswith("module.")}


def choose_model(summary: dict | None, *, has_ema: bool, which: str | None = None) -> dict:
    """``model_choice``: which model ("ema" or "plain"), the split it was chosen on (or None), and why."""
    if which is not None:
        if which == "ema" and not has_ema:
            raise ValueError("--ema: this run has no EMA model (it was trained without --model-ema)")
        return {"model": which, "chosen_on": None, "reason": f"--{which} asked for"}
    if not has_ema:
        return {"model": "plain", "chosen_on": None, "reason": "the run has no EMA model"}
    summary = summary or {}
    if "holdout" in summary and "holdout_ema" in summary:
        plain, ema = summary["holdout"]["acc1"], summary["holdout_ema"]["acc1"]
        model = "ema" if ema > plain else "plain"
        return {"model": model, "chosen_on": "holdout",
                "reason": f"holdout acc@1: EMA {ema:.2f}, plain {plain:.2f}"}
    return {"model": "plain", "chosen_on": None,
            "reason": "no holdout split: the final plain model, not chosen on test data"}


def weights_metrics(summary: dict | None, *, data: str, model: str) -> dict:
    """``_metrics``: {data set: {split: {acc@1, acc@5, n, loss, ece, nll, brier}}} of the chosen model;
    test-time-augmentation results (``<split>_tta`` keys of summary.json) apart from the plain ones."""
    if not summary:
        return {}
    suffix = "_ema" if model == "ema" else ""
    out = {}
    for split in ("holdout", "test"):
        for key, name in ((f"{split}{suffix}", split), (f"{split}{suffix}_tta", f"{split}_tta")):
            m = summary.get(key)
            if isinstance(m, dict) and "acc1" in m:
                out[name] = {METRIC_NAMES[k]: v for k, v in m.items() if k in METRIC_NAMES}
    return {data: out} if out else {}


def run_weights_meta(ckpt: dict, *, summary: dict | None, recipe_dict: dict, choice: dict,
                     source: dict, channels: int) -> dict[str, Any]:
    """The weights meta of a checkpoint's model (everything but the hash, sizes and versions)."""
    recipe = make_recipe(**recipe_dict)
    built = model_build_kwargs(recipe, num_classes=len(ckpt["classes"]), native_size=ckpt["native_size"])
    arch, args = built.pop("name"), built
    params, ops = model_counts(arch, args, recipe.val_crop_size)
    data = (summary or {}).get("data") or Path(recipe.data).name
    which = "EMA" if choice["model"] == "ema" else "plain"
    return {
        "categories": list(ckpt["classes"]), "num_params": params, "min_size": min_input_size(arch, args),
        "_metrics": weights_metrics(summary, data=data, model=choice["model"]), "_ops": ops,
        "recipe": recipe_dict, "arch": arch, "builder_args": args,
        "_docs": f"{arch} trained by sotakit on {data} for {ckpt['epoch']} "
                 f"epoch{'' if ckpt['epoch'] == 1 else 's'}"
                 f"{' (recipe ' + recipe.recipe_name + ')' if recipe.recipe_name else ''}; the {which} model "
                 f"({choice['reason']}).",
        "preprocessing": {"resize_size": recipe.val_resize_size, "crop_size": recipe.val_crop_size,
                          "interpolation": recipe.interpolation, "antialias": True,
                          "mean": list(ckpt["mean"]), "std": list(ckpt["std"]), "channels": channels},
        "model_choice": choice, "source": source, "versions": None,
    }


def checkpoint_channels(ckpt: dict, recipe_dict: dict) -> int:
    """The data's image channels: in the checkpoint since weights files exist, else read from the data."""
    if "channels" in ckpt:
        return int(ckpt["channels"])
    from ..data import image_channels, load_data
    return image_channels(load_data(recipe_dict["data"], recipe_dict.get("data_root")))


def export_run_weights(run_dir: str | Path, *, out: str | Path | None = None, which: str | None = None,
                       summary: dict | None = None, extra_meta: dict | None = None) -> tuple[Path, dict]:
    """Write the weights file of a run directory (default ``RUN/weights.safetensors``) from its newest
    verified checkpoint; ``which`` ("ema"/"plain") overrides the choice. Returns (path, meta)."""
    import json
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.toml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no recipe.toml); pass runs/<run>")
    ckpt_path, ckpt = load_newest(run_dir)
    if summary is None and (run_dir / "summary.json").is_file():
        summary = json.loads((run_dir / "summary.json").read_text())
    # recipe.toml, not the checkpoint's copy: `tune-resize` may have stored a tuned eval resize there
    recipe_dict = {**ckpt["recipe"], "val_resize_size": load_recipe(run_dir / "recipe.toml").val_resize_size}
    choice = choose_model(summary, has_ema=ckpt.get("ema") is not None, which=which)
    state = ema_weights(ckpt["ema"]) if choice["model"] == "ema" else ckpt["model"]
    source = {"run_dir": str(run_dir.resolve()), "checkpoint": ckpt_path.name, "epoch": ckpt["epoch"],
              "finished": summary is not None}
    meta = run_weights_meta(ckpt, summary=summary, recipe_dict=recipe_dict, choice=choice, source=source,
                            channels=checkpoint_channels(ckpt, recipe_dict))
    calibration = run_dir / "calibration.json"  # `sotakit calibrate`: kept when the same model goes in
    if calibration.is_file() and (cal := json.loads(calibration.read_text()))["model"] == choice["model"]:
        meta["temperature"] = cal["temperature"]
        meta["calibration"] = {k: v for k, v in cal.items() if k != "temperature"}
    meta.update(extra_meta or {})
    path = write_weights(Path(out) if out else run_dir / WEIGHTS_FILE, state, meta)
    return path, read_meta(path)  # as written: with the hash, file size and versions


def write_finished_weights(run_dir: Path, summary: dict) -> Path | None:
    """The end of a run: its weights.safetensors. A failure here is reported, not raised: the run's
    checkpoint and summary are intact, and `sotakit export-weights RUN` writes the file later."""
    try:
        return export_run_weights(run_dir, summary=summary)[0]
    except Exception as e:  # noqa: BLE001 - the run itself succeeded; say what failed and how to retry
        log.warning(f"warning: could not write {run_dir / WEIGHTS_FILE} ({type(e).__name__}: {e}); "
                    f"`sotakit export-weights {run_dir}` retries")
        return None
