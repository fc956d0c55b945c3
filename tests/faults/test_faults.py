"""The fast tier of the fault suite: every fault for real, in subprocesses, one trial each.

One trial (a random step, signal moment or rank) keeps `make test` within its time; `make faults`
runs the same scenarios with the trial counts the promises name (3 to 10) and writes
docs/reliability.md. ``SOTAKIT_FAULT_TRIALS=3`` gives more here.
"""

from __future__ import annotations

import os
import random

import pytest

import scenarios as s

pytestmark = pytest.mark.slow  # every scenario trains in subprocesses

TRIALS = int(os.environ.get("SOTAKIT_FAULT_TRIALS", "1"))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    if not (s.FMNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return tmp_path_factory.mktemp("faults")


@pytest.mark.parametrize("scenario", s.FAST_TIER, ids=lambda f: f.__name__)
def test_fault_holds(work, scenario):
    rng = random.Random(f"{scenario.__name__}-fast")
    failures = []
    for i in range(TRIALS):
        trial = scenario(work, rng)
        if not trial.held:
            failures.append(f"trial {i + 1}: {trial.detail}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("case", s.ISSUE10, ids=lambda f: f.__name__)
def test_case_holds(work, case):
    """Issue 10's cases: each is deterministic (one command, its exit code, words and files), one trial."""
    trial = case(work, random.Random(f"{case.__name__}-fast"))
    if trial.detail.startswith("SKIPPED"):
        pytest.skip(trial.detail)
    assert trial.held, trial.detail
