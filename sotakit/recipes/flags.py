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


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("recipe options (TorchVision reference flags and sotakit's own)")
    for name, f in FIELDS.items():
        t = field_type(name)
        names = [*f.metadata["aliases"], flag_of(name)]
        default = f.default
        help_text = f"{f.metadata['help']} (reference default: {default})"
        if t is bool:
            # store_true like the reference; --no-x to switch off a preset's true.
            group.add_argument(*names, dest=name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(*names, dest=name, type=str, default=argparse.SUPPRESS,
                               metavar=name.upper(), help=help_text)


# Names other trainers (timm, fastai scripts) use for the same options, so the hint is the right one.
SYNONYMS = {"--learning-rate": "--lr", "--optimizer": "--opt", "--arch": "--model",
            "--num-workers": "--workers", "--smoothing": "--label-smoothing", "--mixup": "--mixup-alpha",
            "--cutmix": "--cutmix-alpha", "--sched": "--lr-scheduler",
            "--warmup-epochs": "--lr-warmup-epochs", "--aa": "--auto-augment", "--reprob": "--random-erase",
            "--min-lr": "--lr-min", "--model-ema-force-cpu": "--model-ema",
            "--channels-last": "--channels-last", "--clip-grad": "--clip-grad-norm", "--data-dir": "--data"}


def known_flags(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings]


def check_unknown(argv: list[str], parser: argparse.ArgumentParser) -> None:
    """Fail on an unknown option, naming the closest valid one (argparse alone does not)."""
    flags = known_flags(parser)
    for tok in argv:
        if tok.startswith("-") and not _is_number(tok):
            opt = tok.split("=", 1)[0]
            if opt not in flags:
                hint = f" Did you mean {SYNONYMS[opt]!r}?" if opt in SYNONYMS else closest(opt, flags)
                raise RecipeError(f"unknown option {opt}.{hint} See `sotakit train --help`.")


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
