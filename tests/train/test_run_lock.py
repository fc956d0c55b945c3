"""Who owns a run, and what a damaged run directory still gives back (issue 10): the lock, a reused PID,
torn metrics lines, unreadable manifests, a stop inside an evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from sotakit.evaluate import evaluate
from sotakit.evaluate.evaluate import StopEvaluation
from sotakit.train.checkpoint import read_manifest
from sotakit.train.rundir import (
    LOCK_FILE,
    RunBusyError,
    append_record,
    claim_run,
    process_alive,
    process_start,
    read_metrics,
    release_run,
)


def test_a_second_process_cannot_claim_a_run_and_a_dead_one_leaves_no_lock(tmp_path):
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / LOCK_FILE)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunBusyError, match="is training it"):
            claim_run(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    claim_run(tmp_path)  # the kernel dropped the dead holder's lock: no stale file blocks
    claim_run(tmp_path)  # and a second claim by the owner is a no-op
    info = json.loads((tmp_path / "run.pid").read_text())
    assert info["pid"] == os.getpid() and info["started"] == process_start(os.getpid())
    release_run(tmp_path)


def test_a_reused_pid_is_not_the_run_owner():
    other = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.05)
        host = os.uname().nodename
        assert process_alive({"pid": other.pid, "host": host, "started": process_start(other.pid)})
        assert not process_alive({"pid": other.pid, "host": host, "started": process_start(other.pid) + 1})
        assert not process_alive({"pid": other.pid, "host": host})  # old run.pid: `sleep` is not sotakit
    finally:
        other.kill()
        other.wait()


def test_metrics_lines_torn_by_a_crash_are_closed_and_skipped(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "step", "step": 1}\n{"kind": "step", "st')
    append_record(path, json.dumps({"kind": "step", "step": 2}))
    assert path.read_text().splitlines()[-1] == '{"kind": "step", "step": 2}'  # not glued to the torn one
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    assert f"{path} line 2 cannot be read" in caplog.text


@pytest.mark.parametrize("text", ["\x00garbage", '{"checkpoints": 5}', "[1, 2]",
                                  '{"checkpoints": [1, {"a": 2}]}'])
def test_a_manifest_of_any_wrong_shape_reads_as_empty(tmp_path, text):
    (tmp_path / "checkpoints.json").write_text(text)
    assert read_manifest(tmp_path) == []


def test_an_evaluation_stops_after_the_batch_a_stop_arrives_in():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    loader = [(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))] * 5
    asked = []
    with pytest.raises(StopEvaluation, match="after 2 of 5"):
        evaluate(model, loader, should_stop=lambda: asked.append(1) or len(asked) == 2)
    assert evaluate(model, loader, should_stop=lambda: False)["n"] == 15


TB_FULL = """
import resource, signal, sys
from pathlib import Path
from sotakit.train.checkpoint import WriteError
from sotakit.train.rundir import MetricsLog
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, as a full disk gives ENOSPC
log = MetricsLog(Path(sys.argv[1]))
log.path = Path("/dev/null")  # only the TensorBoard events meet the limit
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    for i in range(2000):
        log.write({"kind": "step", "loss": float(i)}, global_step=i)
    log.finish({"test": {"acc1": 1.0}}, hparams={"lr": 0.1})
except WriteError as e:
    print("error:", e)
log.close()
"""


def test_a_failed_tensorboard_write_is_one_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-c", TB_FULL, str(tmp_path)], capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.startswith(f"error: could not write the TensorBoard events in {tmp_path}: ")
    assert "File too large" in r.stdout and "Traceback" not in r.stderr, r.stderr  # not the thread's either
