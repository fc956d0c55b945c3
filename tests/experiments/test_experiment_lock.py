"""Two experiments on one directory (issue 10): the second refuses, and each run counts once."""

from __future__ import annotations

import json

import pytest

from sotakit.experiments.runner import ExperimentBusyError, experiment_lock, read_results, unfinished_run


def test_a_second_experiment_on_a_directory_refuses_naming_the_first(tmp_path):
    with experiment_lock(tmp_path):
        with pytest.raises(ExperimentBusyError, match=r"is in use by process \d+ \(sotakit"):
            with experiment_lock(tmp_path):  # another open file description: as another process
                pass
    with experiment_lock(tmp_path):  # released on exit
        pass


def test_each_configuration_seed_and_fold_counts_once(tmp_path):
    rec = {"recipe_hash": "h", "seed": 0, "fold": None, "acc1": 50.0}
    lines = [rec, {**rec, "acc1": 51.0}, {**rec, "seed": 1}, {**rec, "fold": 2}]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"recipe_ha')
    got = read_results(tmp_path / "results.jsonl")
    assert [(r["seed"], r["fold"], r["acc1"]) for r in got] == [(0, None, 50.0), (1, None, 50.0),
                                                                 (0, 2, 50.0)]


def test_an_interrupted_run_is_found_by_its_exact_name(tmp_path):
    names = ("20260101-000000-a-s0-abc123", "20260101-000001-a-s0-abc123-1", "20260101-000000-a-s01-abc123")
    for name in names:
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "recipe.toml").write_text("")
    assert unfinished_run(tmp_path, "a-s0-abc123").name == "20260101-000001-a-s0-abc123-1"
    assert unfinished_run(tmp_path, "b-s0-abc123") is None
