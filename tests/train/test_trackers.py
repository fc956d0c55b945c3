"""--tracker: the recipe, every logged record and the final test metrics reach the real MLflow (a local
file store) and W&B (offline, with no network): the tests read back what the stores hold."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from conftest import tiny_recipe
from sotakit.cli import main
from sotakit.train import fit

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_mlflow_gets_the_recipe_every_record_and_the_final_metrics(image_folder, tmp_path, monkeypatch,
                                                                    one_thread):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default: mlruns/ beside runs/
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    res = fit(tiny_recipe(image_folder, tmp_path, run_name="tracked", model_ema=True, model_ema_steps=1),
              verbose=False, tracker="mlflow")
    summary = json.loads((res.run_dir / "summary.json").read_text())
    client = mlflow.tracking.MlflowClient((tmp_path / "mlruns").as_uri())
    (run,) = client.search_runs(["0"])  # the Default experiment
    assert run.info.run_name == res.run_dir.name and run.info.status == "FINISHED"
    assert run.data.params["model"] == "resnet9_w16" and float(run.data.params["lr"]) == 0.05

    records = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    history = client.get_metric_history(run.info.run_id, "step/loss")
    assert [m.value for m in history] == pytest.approx([r["loss"] for r in records if r["kind"] == "step"])
    (epoch,) = [r for r in records if r["kind"] == "epoch"]
    (val,) = client.get_metric_history(run.info.run_id, "epoch/val_acc1")
    # the step is TensorBoard's global step: after epoch 1 of 5 steps (36 images, batches of 8)
    assert val.value == pytest.approx(epoch["val_acc1"]) and val.step == 5
    for key in ("test", "test_ema"):
        (final,) = client.get_metric_history(run.info.run_id, f"final/{key}_acc1")
        assert final.value == pytest.approx(summary[key]["acc1"]) and final.step == 5


def wandb_records(run_file: Path) -> list:
    """The protobuf records of an offline W&B run file (``run-<id>.wandb``): a 7-byte header, then the
    LevelDB log format (32 KiB blocks of records: CRC-32, length, type, data; FULL or FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2

    raw = run_file.read_bytes()
    assert raw[:4] == b":W&B"
    out, pos, part = [], 7, b""
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a record header is padding
            pos += 32768 - pos % 32768
            continue
        crc, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        data = raw[pos + 7:pos + 7 + length]
        assert zlib.crc32(bytes([kind]) + data) & 0xFFFFFFFF == crc
        part = data if kind in (1, 2) else part + data
        if kind in (1, 4):  # FULL or LAST: a whole record
            out.append(wandb_internal_pb2.Record.FromString(part))
        pos += 7 + length
    return out


WANDB_RUN = """
import sys, torch
torch.set_num_threads(1)
from conftest import tiny_recipe
from sotakit.train import fit
res = fit(tiny_recipe(sys.argv[1], sys.argv[2], run_name="tracked", model_ema=True, model_ema_steps=1),
          verbose=False, tracker="wandb")
print(res.run_dir)
"""


def no_network_prefix() -> list[str]:
    """``unshare -rn`` (a new user and network namespace: no interface but a down loopback) when allowed."""
    if not shutil.which("unshare"):
        return []
    allowed = subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
    return ["unshare", "-rn"] if allowed else []


@pytest.mark.slow
def test_wandb_runs_offline_in_the_run_directory_with_no_network(image_folder, tmp_path):
    pytest.importorskip("wandb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}  # the tracker picks offline
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]), WANDB_SILENT="true",
               # where unshare is not allowed: any request would go to a closed local port
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", WANDB_BASE_URL="http://127.0.0.1:9")
    command = [*no_network_prefix(), sys.executable, "-c", WANDB_RUN, str(image_folder), str(tmp_path)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")  # offline: nothing left to sync from

    written = wandb_records(run_file)
    (run,) = [r.run for r in written if r.HasField("run")]
    assert run.display_name == run_dir.name and run.project == "sotakit"
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["seed"] == 1 and config["model"] == "resnet9_w16"
    rows = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            for r in written if r.HasField("history")]
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (epoch,) = [r for r in records if r["kind"] == "epoch"]
    last = rows[-1]  # the step of the epoch record and the final metrics (step 5: one epoch of 5 steps)
    assert last["_step"] == 5 and last["epoch/val_acc1"] == pytest.approx(epoch["val_acc1"])
    assert last["final/test_acc1"] == pytest.approx(summary["test"]["acc1"])
    assert last["final/test_ema_acc1"] == pytest.approx(summary["test_ema"]["acc1"])
    assert any(r.HasField("exit") for r in written)  # the run finished


def test_missing_package_names_the_install_command(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    code = main(["train", "--tracker", "mlflow", "--data", str(tmp_path), "--epochs", "1"])
    assert code == 2 and "pip install mlflow" in capsys.readouterr().err
