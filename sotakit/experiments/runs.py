"""Runs in one place: find run directories, read each one's row, compare two runs.

console.py draws the tables `sotakit runs` and `runs compare` print.

Everything is read back from the run directory (recipe.toml, metrics.jsonl, summary.json, run.pid,
failed.json), so a run is listed the same whether it was trained by `sotakit train`, by an ablation
(``ABLATION_DIR/runs/*``) or by a user's own call to ``fit()``.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import tomllib
from pathlib import Path
from statistics import median

from ..recipes import load_recipe
from ..train.rundir import FAILED_FILE, read_metrics, run_owner, runs_root

log = logging.getLogger("sotakit")
STATUSES = ("finished", "running", "interrupted", "failed")
STAMP = re.compile(r"^\d{8}-\d{6}-")  # create_run_dir's start-time prefix


def is_run_dir(path: Path) -> bool:
    return (path / "recipe.toml").is_file()


def find_runs(root: str | Path | None = None, pattern: str | None = None) -> list[Path]:
    """Run directories under ``root`` (a run, a runs folder, or a folder holding ``runs/``) whose
    name matches ``pattern`` (see ``name_matches``), sorted by name (names start with their start time)."""
    root = Path(root) if root is not None else runs_root()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory: pass --root DIR (where `sotakit train` or "
                                "`sotakit ablate` wrote its runs)")
    if is_run_dir(root):
        found = [root]
    else:
        found = [p for base in (root, root / "runs") if base.is_dir() for p in base.iterdir()
                 if p.is_dir() and is_run_dir(p)]
    return sorted((p for p in found if name_matches(p.name, pattern or "*")), key=lambda p: p.name)


def name_matches(name: str, pattern: str) -> bool:
    """fnmatch on the run name, with or without its ``YYYYmmdd-HHMMSS-`` start-time prefix."""
    return fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(STAMP.sub("", name), pattern)


def read_run_file(path: Path, parse) -> dict | None:
    """A run's recipe.toml or summary.json parsed, or None when absent; one that cannot be read (torn,
    garbage) is None too, with a warning naming it, so one damaged run does not break a listing."""
    if not path.is_file():
        return None
    try:
        data = parse(path.read_text(errors="replace"))
    except (OSError, ValueError) as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        log.warning(f"warning: {path} cannot be read ({e}): listed without it")
        return None
    if not isinstance(data, dict):
        log.warning(f"warning: {path} does not hold a table: listed without it")
        return None
    return data


def run_status(run_dir: Path) -> str:
    """finished (summary.json), running (run.pid names a live process), failed (failed.json) or
    interrupted (stopped, killed or crashed without either)."""
    if (run_dir / "summary.json").is_file():
        return "finished"
    owner = run_owner(run_dir)
    # owner[1] is None on another host, where we cannot look: the file is trusted
    if owner is not None and owner[1] is not False:
        return "running"
    if (run_dir / FAILED_FILE).is_file():
        return "failed"
    return "interrupted"


def run_info(run_dir: Path) -> dict:
    """One run's row: recipe facts, progress, accuracies, timing and status.

    Finished runs report the test split from summary.json; unfinished ones the last epoch's
    validation numbers (``acc_source`` says which).
    """
    recipe = read_run_file(run_dir / "recipe.toml", tomllib.loads) or {}
    recipe = recipe.get("recipe") if isinstance(recipe.get("recipe"), dict) else {}  # raw: old files too
    epochs = [r for r in read_metrics(run_dir) if r.get("kind") == "epoch"]
    summary = read_run_file(run_dir / "summary.json", json.loads)
    info = {"name": run_dir.name, "path": str(run_dir), "recipe": recipe.get("recipe_name", ""),
            "model": recipe.get("model", "-"),
            "data": summary.get("data", "-") if summary else Path(recipe.get("data", "-")).name,
            "seed": recipe.get("seed", "-"), "epochs_done": len(epochs), "epochs": recipe.get("epochs", "-"),
            "status": run_status(run_dir)}
    if summary:
        test, ema = summary.get("test", {}), summary.get("test_ema", {})
        info.update(acc1=test.get("acc1"), acc5=test.get("acc5"), ema_acc1=ema.get("acc1"),
                    ema_acc5=ema.get("acc5"), wall_time_s=summary.get("wall_time_s"),
                    img_s=summary.get("median_img_s"), acc_source="test")
    else:
        last = epochs[-1] if epochs else {}
        info.update(acc1=last.get("val_acc1"), acc5=last.get("val_acc5"), ema_acc1=last.get("ema_acc1"),
                    ema_acc5=last.get("ema_acc5"),
                    wall_time_s=sum(r["train_epoch_time"] for r in epochs) if epochs else None,
                    img_s=median(r["train_img_s"] for r in epochs) if epochs else None,
                    acc_source=last.get("val_split", "-"))
    return info


def resolve_run(name: str | Path, root: str | Path | None = None) -> Path:
    """A run given as a directory path, or by (a unique fnmatch of) its name under ``root``."""
    path = Path(name)
    if path.is_dir() and is_run_dir(path):
        return path
    if path.is_dir():
        raise FileNotFoundError(f"{path} has no recipe.toml: not a run directory")
    matches = find_runs(root, str(name)) or find_runs(root, f"*{name}*")
    if len(matches) == 1:
        return matches[0]
    where = root if root is not None else runs_root()
    if not matches:
        raise FileNotFoundError(f"no run named {name!r} under {where}; "
                                f"`sotakit runs --root {where}` lists them")
    names = ", ".join(p.name for p in matches[:5]) + (", ..." if len(matches) > 5 else "")
    raise ValueError(f"{name!r} matches {len(matches)} runs under {where} ({names}); "
                     "give the full name or the directory")


# Recipe fields (and the summary's data fingerprint) that change the images a run is tested on.
TEST_SET_FIELDS = ("data", "test_limit", "data_fingerprint")

METRICS = (("test acc@1", "acc1"), ("test acc@5", "acc5"), ("EMA test acc@1", "ema_acc1"),
           ("EMA test acc@5", "ema_acc5"), ("wall time (s)", "wall_time_s"), ("img/s", "img_s"))


def compare_runs(run_a: Path, run_b: Path) -> tuple[list[tuple[str, object, object]],
                                                    list[tuple[str, object, object, object]]]:
    """(recipe fields that differ as (field, A, B); metrics as (label, A, B, B - A or None)).

    Finished runs whose data fingerprints (summary.json) differ get a ``data_fingerprint`` row (the
    first 12 hex digits): the same name can hold other images.
    """
    ra, rb = (load_recipe(p / "recipe.toml").to_dict() for p in (run_a, run_b))
    recipe_diff = [(k, ra[k], rb[k]) for k in ra if ra[k] != rb[k]]
    fa, fb = (_summary(p).get("data_fingerprint") for p in (run_a, run_b))
    if fa and fb and fa != fb:
        recipe_diff.append(("data_fingerprint", fa[:12], fb[:12]))
    ia, ib = run_info(run_a), run_info(run_b)
    metrics = []
    for label, key in METRICS:
        a, b = ia.get(key), ib.get(key)
        metrics.append((label, a, b, b - a if a is not None and b is not None else None))
    return recipe_diff, metrics


def _summary(run_dir: Path) -> dict:
    return read_run_file(run_dir / "summary.json", json.loads) or {}


def check_pattern_or_root(pattern: str | None, root: str | None) -> tuple[str | None, str | None]:
    """`sotakit runs DIR` means --root DIR: a pattern that names an existing directory is a root."""
    if pattern and root is None and Path(pattern).is_dir():
        return None, pattern
    if pattern and any(c in pattern for c in "/\\") and not Path(pattern).is_dir():
        raise ValueError(f"{pattern} is not a directory; PATTERN matches run names (e.g. '*resnet*'), "
                          "--root DIR chooses where to look")
    return pattern, root
