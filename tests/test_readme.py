"""README's code blocks marked ``<!-- runnable -->`` run as written: the quick start (bash, in a temp
dir with the venv's bin on PATH) and the Python API snippet (a subprocess with a timeout)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runner import cli_env

README = Path(__file__).resolve().parents[1] / "README.md"
RUNNABLE = re.compile(r"<!-- runnable -->\n```(bash|python)\n(.*?)```", re.S)


def runnable_blocks() -> list[tuple[str, str]]:
    return RUNNABLE.findall(README.read_text())


def test_readme_marks_the_quick_start_and_the_api_snippet_runnable():
    kinds = [kind for kind, _ in runnable_blocks()]
    assert kinds.count("bash") >= 1 and kinds.count("python") >= 1


@pytest.mark.slow
@pytest.mark.parametrize("kind,code", runnable_blocks(), ids=lambda v: v if v in ("bash", "python") else "")
def test_readme_block_runs(kind, code, tmp_path, fmnist_root):
    repo = str(README.parent)
    env = cli_env({"PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p),
                   "PATH": os.pathsep.join((str(Path(sys.executable).parent), os.environ["PATH"]))})
    cmd = ["bash", "-euo", "pipefail", "-c", code] if kind == "bash" else [sys.executable, "-c", code]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, f"{kind} block failed:\n{code}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    if kind == "bash":
        assert list(tmp_path.glob("runs/*-fashion-mnist-demo/report.html"))
