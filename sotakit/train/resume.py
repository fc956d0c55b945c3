"""Where a run starts: a fresh run, or a run directory's newest verified checkpoint, checked against
the inputs it is resumed with. Never a run another process trains."""

from __future__ import annotations

import json
import os
import tomllib
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from ..recipes import Recipe, dump_recipe, load_recipe
from ..recipes.recipe import OPERATIONAL_FIELDS, recipe_hash
from .checkpoint import LAST, PREV, load_checkpoint, remove_stale_temps, write_text_atomic
from .rundir import claim_run, run_owner


class ResumeMismatchError(RuntimeError):
    """The checkpoint was written for another model, class list, recipe or data set."""


@dataclass
class ResumePoint:
    """A fresh run (``run_dir`` None), or a run directory with its newest verified checkpoint.

    ``ckpt`` is None for a run killed before its first checkpoint: it starts over in place.
    ``extended_from``: the epochs the run was planned for when ``--epochs`` changes them on resume.
    """

    run_dir: Path | None
    ckpt: dict | None
    recipe: Recipe
    extended_from: int | None = None

    @property
    def resumed(self) -> bool:
        return self.run_dir is not None

    @property
    def finished(self) -> bool:
        """Every epoch trained and the final evaluation written: nothing left to resume."""
        return (self.ckpt is not None and self.ckpt["epoch"] >= self.recipe.epochs
                and self.ckpt.get("step_in_epoch", 0) == 0 and "pending_eval" not in self.ckpt
                and self.finished_summary() is not None)

    def finished_summary(self) -> dict | None:
        """summary.json, or None when it is missing or damaged (the resume then evaluates again and
        rewrites it)."""
        try:
            data = json.loads((self.run_dir / "summary.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def finished_message(self) -> str:
        return (f"{self.run_dir} is finished: all {self.recipe.epochs} epochs trained and evaluated "
                f"(summary.json); nothing to resume. To train it longer: sotakit train --resume "
                f"{self.run_dir} --epochs N")


def find_resume_point(recipe: Recipe | None, *, resume: str | Path | None = None, force: bool = False,
                      epochs: int | None = None) -> ResumePoint:
    """The run to continue (``resume``, else ``recipe.resume``) with its own recipe, or ``recipe`` afresh.

    ``epochs`` changes the number of epochs of the resumed run (extends it; see ``extension_note``).
    """
    resume = resume or (recipe.resume if recipe is not None else None)
    if not resume:
        return ResumePoint(None, None, recipe)
    path = Path(resume)
    run_dir = path if path.is_dir() else path.parent
    refuse_if_running(run_dir, force=force)  # first: owning the run, before touching any of its files
    if _rank() == 0:
        remove_stale_temps(run_dir)  # what a crash mid-save left behind
    fresh = path.is_dir() and not any((run_dir / n).exists() for n in (LAST, PREV))
    point = ResumePoint(run_dir, None if fresh else load_checkpoint(path),
                        load_recipe(run_dir / "recipe.toml"))
    if epochs is None or epochs == point.recipe.epochs:
        return point
    done = point.ckpt["epoch"] if point.ckpt is not None else 0
    if epochs <= done:
        raise ResumeMismatchError(f"--epochs {epochs}: {run_dir} has already trained {done} epochs; give "
                                  "more to extend it")
    return replace(point, recipe=replace(point.recipe, epochs=epochs), extended_from=point.recipe.epochs)


def refuse_if_running(run_dir: Path, *, force: bool) -> None:
    """Two processes rotating one run's checkpoints would undo each other's work (a requeued job
    whose first incarnation still runs): take the run's lock first (``claim_run``: atomic, so of two
    resumes started together one refuses), and refuse while run.pid names a live process of this host
    (a version without the lock). A run.pid whose PID now belongs to another program (its start time
    differs) or whose process is gone does not block."""
    if _rank() != 0:
        return
    if (run_dir / "recipe.toml").is_file():
        claim_run(run_dir)  # --force-resume cannot override a held lock: its holder is alive
    owner = run_owner(run_dir) if not force else None
    if owner is None:
        return
    info, alive = owner
    if alive and info.get("pid") != os.getpid():
        raise ResumeMismatchError(f"refusing to resume {run_dir}: process {info['pid']} on "
                                  f"{info.get('host')} is still training it (run.pid). Stop it first, or "
                                  "pass --force-resume if it is gone.")


def check_resume(ckpt: dict | None, recipe: Recipe, *, classes: list[str], fingerprint: str, force: bool,
                 run_dir: Path | None, allowed: tuple[str, ...] = ()) -> tuple[bool, list[str]]:
    """Refuse to resume on changed inputs; (load everything?, notes) when the checks pass or are forced.

    ``allowed``: recipe fields the resume was asked to change (``epochs`` with ``--resume RUN --epochs N``).

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
    changed = sorted(k for k, v in recipe.to_dict().items() if k not in OPERATIONAL_FIELDS + allowed
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


def extend_run(point: ResumePoint, optimizer, make_scheduler, *, position: tuple[int, int],
               steps_per_epoch: int, per_step: bool, is_main: bool = True, say=print):
    """``--resume RUN --epochs N``: the lr schedule rebuilt for N epochs, at the position the run has reached.

    The rule (timm's and open_clip's on resume): the schedule is stretched, i.e. the run continues
    with the lr the new schedule has at this point, as if it had been planned for N epochs from the
    start; the lr of the epochs already trained is not redone. For cosine that means a jump up from
    the end of the old schedule, then a decay to the minimum at epoch N; step and exponential
    schedules do not depend on the length and go on unchanged; warm-up keeps its length. Said,
    recorded in recipe.toml's notes, and the old summary.json kept as summary-<old>-epochs.json.
    ``position``: (epoch, step) the run resumes at. Returns the new scheduler (called after
    ``restore_state`` loaded the old one and the optimizer).
    """
    epoch, step = position
    units_done = epoch * steps_per_epoch + step if per_step else epoch  # scheduler.step() calls so far
    before = optimizer.param_groups[0]["lr"]
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"]  # the schedule's base, as when the run started
    scheduler = make_scheduler(optimizer)
    with warnings.catch_warnings():  # stepping without optimizer steps, to reach the position
        warnings.simplefilter("ignore")
        for _ in range(units_done):
            scheduler.step()
    after = optimizer.param_groups[0]["lr"]
    epochs, old = point.recipe.epochs, point.extended_from
    note = (f"--epochs {epochs} extends the run from {old} to {epochs} epochs: the lr schedule is rebuilt "
            f"for {epochs} epochs and continues where the run is, as if planned for {epochs} from the start "
            f"(lr {before:.4g} -> {after:.4g}{' per step' if per_step else ''}; epochs already trained are "
            "not redone)")
    say(f"note: {note}")
    if is_main:
        record_extension(point.run_dir, point.recipe, note, old_epochs=old)
    return scheduler


def record_extension(run_dir: Path, recipe: Recipe, note: str, *, old_epochs: int) -> None:
    """recipe.toml with the new epochs and the note added; the finished run's summary kept aside."""
    meta = tomllib.loads((run_dir / "recipe.toml").read_text()).get("meta", {})
    meta["notes"] = "; ".join(n for n in (meta.get("notes", ""), note) if n)
    write_text_atomic(run_dir / "recipe.toml", dump_recipe(recipe, meta))
    summary = run_dir / "summary.json"
    if summary.is_file():
        summary.replace(run_dir / f"summary-{old_epochs}-epochs.json")
