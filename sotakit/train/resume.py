"""Where a run starts: a fresh run, or a run directory's newest verified checkpoint, checked against
the inputs it is resumed with. Never a run another process trains."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..recipes import Recipe, load_recipe
from ..recipes.recipe import OPERATIONAL_FIELDS, recipe_hash
from .checkpoint import LAST, PREV, load_checkpoint, remove_stale_temps
from .rundir import run_owner


class ResumeMismatchError(RuntimeError):
    """The checkpoint was written for another model, class list, recipe or data set."""


@dataclass
class ResumePoint:
    """A fresh run (``run_dir`` None), or a run directory with its newest verified checkpoint.

    ``ckpt`` is None for a run killed before its first checkpoint: it starts over in place.
    """

    run_dir: Path | None
    ckpt: dict | None
    recipe: Recipe

    @property
    def resumed(self) -> bool:
        return self.run_dir is not None


def find_resume_point(recipe: Recipe | None, *, resume: str | Path | None = None,
                      force: bool = False) -> ResumePoint:
    """The run to continue (``resume``, else ``recipe.resume``) with its own recipe, or ``recipe`` afresh."""
    resume = resume or (recipe.resume if recipe is not None else None)
    if not resume:
        return ResumePoint(None, None, recipe)
    path = Path(resume)
    run_dir = path if path.is_dir() else path.parent
    if _rank() == 0:
        remove_stale_temps(run_dir)  # what a crash mid-save left behind
    refuse_if_running(run_dir, force=force)
    fresh = path.is_dir() and not any((run_dir / n).exists() for n in (LAST, PREV))
    return ResumePoint(run_dir, None if fresh else load_checkpoint(path),
                       load_recipe(run_dir / "recipe.toml"))


def refuse_if_running(run_dir: Path, *, force: bool) -> None:
    """Two processes rotating one run's checkpoints would undo each other's work (a requeued job
    whose first incarnation still runs): refuse while run.pid names a live process."""
    owner = run_owner(run_dir) if _rank() == 0 and not force else None
    if owner is None:
        return
    info, alive = owner
    if alive and info.get("pid") != os.getpid():
        raise ResumeMismatchError(f"refusing to resume {run_dir}: process {info['pid']} on "
                                  f"{info.get('host')} is still training it (run.pid). Stop it first, or "
                                  "pass --force-resume if it is gone.")


def check_resume(ckpt: dict | None, recipe: Recipe, *, classes: list[str], fingerprint: str, force: bool,
                 run_dir: Path | None) -> tuple[bool, list[str]]:
    """Refuse to resume on changed inputs; (load everything?, notes) when the checks pass or are forced.

    Forced: with the same model and classes every piece of state is loaded and the run continues
    with the current recipe and data; with another model or class list only the weights whose name
    and shape match are loaded and training starts afresh from epoch 1.
    """
    if ckpt is None:
        return True, []
    saved = ckpt.get("recipe", {})
    problems = []
    if saved.get("model", recipe.model) != recipe.model:
        problems.append(f"model: checkpoint {saved['model']}, now {recipe.model}")
    if list(ckpt.get("classes", classes)) != list(classes):
        problems.append(f"classes: checkpoint {len(ckpt['classes'])} ({', '.join(ckpt['classes'][:5])}...), "
                        f"now {len(classes)} ({', '.join(classes[:5])}...)")
    # Field by field (the hash alone would refuse every run after an upgrade adds a field): a field
    # the checkpoint does not know counts as changed only when it is not at its default.
    defaults = Recipe().to_dict()
    changed = sorted(k for k, v in recipe.to_dict().items() if k not in OPERATIONAL_FIELDS
                     and saved.get(k, defaults[k]) != v)
    if saved and changed:
        diffs = ", ".join(f"{k} {saved.get(k, defaults[k])!r} -> {getattr(recipe, k)!r}" for k in changed)
        problems.append(f"recipe hash: checkpoint {ckpt.get('recipe_hash', '?')}, now {recipe_hash(recipe)} "
                        f"(changed: {diffs})")
    if ckpt.get("data_fingerprint", fingerprint) != fingerprint:
        problems.append(f"data fingerprint: checkpoint {ckpt['data_fingerprint']}, now {fingerprint} "
                        "(images, labels or classes changed)")
    if not problems:
        return True, []
    if not force:
        raise ResumeMismatchError(
            f"refusing to resume {run_dir}: the checkpoint was written for other inputs.\n  "
            + "\n  ".join(problems)
            + "\nStart a new run (add --weights FILE to begin from its weights), or pass --force-resume to "
              "continue anyway (same model and classes: all state is loaded; otherwise only matching "
              "weights).")
    same_shape = not any(p.startswith(("model", "classes")) for p in problems)
    return same_shape, [f"--force-resume overrides: {p}" for p in problems]


def _rank() -> int:
    """This process's rank before the process group exists (torchrun sets RANK)."""
    return int(os.environ.get("RANK", "0"))
