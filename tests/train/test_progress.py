"""Progress lines: the epoch count on step lines and the duration estimate after the first timed steps."""

from __future__ import annotations

import pytest

from sotakit.train import progress as progress_mod
from sotakit.train.progress import RunProgress, StepTimer, duration_text, eta_line


def test_duration_text():
    assert [duration_text(s) for s in (40, 725, 3 * 3600 + 600)] == ["40s", "12m05s", "3h10m"]


def test_step_timer_skips_two_warm_up_steps_and_times_the_next_ten():
    t = StepTimer()
    t.step(0, 0.0)
    for done in range(1, 13):  # steps 1-2 take 5 s each (warm-up), then 0.1 s each
        t.step(done, 10.0 + 0.1 * (done - 2) if done > 2 else 5.0 * done)
        assert t.ready() == (done == 12)
    assert (t.first, t.last) == (3, 12) and t.rate() == pytest.approx(10.0)


def test_estimate_and_epoch_count_in_plain_lines(monkeypatch, capsys):
    clock = iter([0.0, 1.0, 2.0] + [2.0 + 0.5 * k for k in range(1, 20)])
    monkeypatch.setattr(progress_mod.time, "perf_counter", lambda: next(clock))
    p = RunProgress(600, 469, enabled=True)
    p.live = False  # plain lines, as in a pipe
    p.start_epoch(1)
    for done in range(1, 13):
        p.step(done)
    p.log_step({"epoch": 1, "step": 10, "loss": 1.0, "acc1": 50.0, "lr": 0.1, "img_s": 100.0})
    out = capsys.readouterr().err  # progress goes to stderr
    left = (600 - 1) * 469 - 12
    assert eta_line(steps_left=left, rate=2.0, epochs=600, first=3, last=12) in out
    assert "about 39h01m left for 600 epochs at 2.0 steps/s (measured over steps 3-12" in out
    assert " epoch 2/600 step 10/469 loss" in out
    assert out.count("about ") == 1


def test_an_epoch_shorter_than_the_timed_steps_estimates_at_its_end(capsys):
    p = RunProgress(4, 5, enabled=True)
    p.live = False
    p.start_epoch(0)
    for done in range(1, 6):
        p.step(done)
    p.end_epoch("epoch 1/4 ...")
    out = capsys.readouterr().err  # progress goes to stderr
    assert "for 4 epochs at" in out and "(measured over steps 3-5" in out
