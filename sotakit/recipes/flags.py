"""Command-line flags derived from the Recipe fields, so the reference script's flags work as-is.

Every field ``x_y`` becomes ``--x-y`` (plus the reference's aliases ``-b``, ``-j``, ``--wd``), with
its help text from the field. Defaults are suppressed so that only flags the user typed override
the preset; unknown flags fail before any work with the closest valid one named.
"""

from __future__ import annotations

import argparse
from typing import Any

from .recipe import FIELDS, RecipeError, closest, field_type, flag_of

# Flags of `sotakit train` that are not recipe fields.
EXTRA_FLAGS = ("--recipe", "--config", "--help", "-h", "--dry-run")


def field_help(name: str) -> str:
    """A field's --help: its text, its choices, and its default ("reference default" for the reference's
    own flags, whose defaults are the reference's; "default" for sotakit's). Unset and empty defaults,
    and texts that already say what the default is, get none."""
    f = FIELDS[name]
    text = f.metadata["help"]
    if f.metadata["choices"]:
        text += f"; one of: {', '.join(f.metadata['choices'])}"
    if f.default not in (None, "") and "default" not in text:
        text += f" ({'reference default' if f.metadata['ref'] else 'default'}: {f.default})"
    return text


RECIPE_GROUP = "recipe options (TorchVision reference flags and sotakit's own)"


def add_recipe_arguments(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = (),
                         title: str = RECIPE_GROUP) -> None:
    """One flag per Recipe field but those in ``skip`` (ablate and sweep set them themselves)."""
    group = parser.add_argument_group(title)
    for name, f in FIELDS.items():
        if name in skip:
            continue
        t = field_type(name)
        names = [*f.metadata["aliases"], flag_of(name)]
        help_text = field_help(name)
        if t is bool:
            # store_true like the reference; --no-x to switch off a preset's true.
            group.add_argument(*names, dest=name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            metavar = "{" + ",".join(f.metadata["choices"]) + "}" if f.metadata["choices"] else name.upper()
            group.add_argument(*names, dest=name, type=str, default=argparse.SUPPRESS,
                               metavar=metavar, help=help_text)


# Names other trainers (timm, fastai scripts) use for the same options, so the hint is the right one: a
# sotakit flag, or (no "-" first) a sentence for an option sotakit does not have. Never a real flag.
SYNONYMS = {"--learning-rate": "--lr", "--optimizer": "--opt", "--arch": "--model",
            "--num-workers": "--workers", "--smoothing": "--label-smoothing", "--mixup": "--mixup-alpha",
            "--cutmix": "--cutmix-alpha", "--sched": "--lr-scheduler",
            "--warmup-epochs": "--lr-warmup-epochs", "--aa": "--auto-augment", "--reprob": "--random-erase",
            "--min-lr": "--lr-min", "--model-ema-force-cpu": "--model-ema",
            "--clip-grad": "--clip-grad-norm", "--data-dir": "--data",
            # timm's train.py
            "--log-interval": "--print-freq", "--output": "--output-dir", "--experiment": "--run-name",
            "--initial-checkpoint": "--weights", "--aug-repeats": "--ra-reps",
            "--img-size": "--train-crop-size", "--input-size": "--train-crop-size",
            "--log-wandb": "--tracker",
            "--pretrained": "sotakit has no --pretrained (no hub downloads); start from a file with "
                            "--weights FILE.",
            "--torchcompile": "--compile",
            "--grad-accum-steps": "sotakit has no gradient accumulation; use a smaller -b with "
                                  "--lr-ref-batch (the lr then scales with the batch)."}
# What to add after the flag a synonym names, when one flag does not say it all.
SYNONYM_NOTES = {"--img-size": " (and --val-crop-size, --val-resize-size)",
                 "--input-size": " (one square side; also --val-crop-size)", "--log-wandb": " wandb",
                 "--aug-repeats": " (with --ra-sampler)"}


def known_flags(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings]


def flag_hint(opt: str, flags: list[str]) -> str:
    """" Did you mean '--x'?" for an unknown option: another trainer's name for it, else the flag it
    begins (`--lr-warm`: --lr-warmup-epochs; typed flags are often cut short), else the closest one."""
    if opt in SYNONYMS:
        target = SYNONYMS[opt]
        if not target.startswith("-"):
            return f" {target}"
        if target in flags:
            note = SYNONYM_NOTES.get(opt, "")
            if note == " wandb":  # a flag and its value
                return f" Did you mean '{target}{note}'?"
            return f" Did you mean {target!r}{note}?"
    longer = [f for f in flags if f.startswith(opt) and len(opt) > 3]
    return f" Did you mean {longer[0]!r}?" if longer else closest(opt, flags)


def check_unknown(argv: list[str], parser: argparse.ArgumentParser, command: str = "train") -> None:
    """Fail on an unknown option, naming the closest valid one (argparse alone does not)."""
    flags = known_flags(parser)
    for tok in argv:
        if tok == "--":
            return
        if tok.startswith("-") and not _is_number(tok):
            opt = tok.split("=", 1)[0]
            if opt not in flags:
                raise RecipeError(f"unknown option {opt}.{flag_hint(opt, flags)} "
                                  f"See `sotakit {command} --help`.")


def key_hint(key: str) -> str:
    """" Did you mean 'lr'?" for an unknown recipe key (`learning_rate`): the synonyms table, then difflib."""
    target = SYNONYMS.get(flag_of(key), "")
    if target.startswith("--") and target[2:].replace("-", "_") in FIELDS:
        return f" Did you mean {target[2:].replace('-', '_')!r}?"
    return closest(key, FIELDS)


def _is_number(tok: str) -> bool:
    try:
        float(tok)
        return True
    except ValueError:
        return False


def overrides_from(ns: argparse.Namespace) -> dict[str, Any]:
    """The recipe fields the user typed, as strings/bools (typed later by make_recipe)."""
    out = {k: v for k, v in vars(ns).items() if k in FIELDS}
    for k, v in list(out.items()):
        if isinstance(v, str) and v.lower() in ("none", "") and FIELDS[k].default is None:
            out[k] = None
    return out
