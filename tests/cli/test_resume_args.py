"""`train --resume RUN` takes exactly one recipe flag, --epochs (to extend the run)."""

from __future__ import annotations

import pytest

from sotakit.cli import make_parser, resume_run
from sotakit.recipes import RecipeError


def parse(*argv):
    return make_parser()[0].parse_args(["train", *argv])


def test_resume_accepts_epochs_and_passes_it_to_fit():
    assert resume_run(parse("--resume", "runs/x")) == {"resume": "runs/x", "epochs": None}
    assert resume_run(parse("--resume", "runs/x", "--epochs", "9")) == {"resume": "runs/x", "epochs": 9}


def test_resume_refuses_other_recipe_flags():
    with pytest.raises(RecipeError, match="only --epochs N may change.*drop lr"):
        resume_run(parse("--resume", "runs/x", "--epochs", "9", "--lr", "0.1"))
