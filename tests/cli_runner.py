"""`python -m sotakit` in a child process, as the CLI, fault and bad-image tests run it. Imported as
``cli_runner``, like ``loopback``: pytest puts tests/ on sys.path for tests/conftest.py (no __init__.py
files, rootdir-relative imports); tests/faults/run_full.py adds it itself.
"""

from __future__ import annotations

import os
import subprocess
import sys

# One intra-op thread: a second one spin-waits on a busy 2-core machine; torch's warnings are noise.
CHILD_ENV = {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def cli_env(env: dict[str, str] | None = None, fault: str = "") -> dict[str, str]:
    """The child's environment: ``os.environ`` read now (so the test's isolated XDG_CACHE_HOME reaches
    the child), ``CHILD_ENV``, then ``env``, and ``SOTAKIT_FAULT=fault`` when a fault is given."""
    out = {**os.environ, **CHILD_ENV, **(env or {})}
    if fault:
        out["SOTAKIT_FAULT"] = fault
    return out


def cli_cmd(*args, torchrun=()) -> list[str]:
    """``python -m sotakit ARGS``; with ``torchrun`` arguments, launched by ``torch.distributed.run
    --standalone TORCHRUN``."""
    launcher = ["-m", "torch.distributed.run", "--standalone", *map(str, torchrun)] if torchrun else []
    return [sys.executable, *launcher, "-m", "sotakit", *map(str, args)]


def run_cli(*args, env=None, fault: str = "", timeout: float = 300, torchrun=(),
            **kw) -> subprocess.CompletedProcess:
    """Run the CLI to the end; stdout and stderr captured as text. ``kw`` goes to ``subprocess.run``."""
    return subprocess.run(cli_cmd(*args, torchrun=torchrun), capture_output=True, text=True,
                          env=cli_env(env, fault), timeout=timeout, **kw)


def start_cli(*args, env=None, fault: str = "", torchrun=(), **kw) -> subprocess.Popen:
    """Start the CLI and return at once, stderr merged into ``p.stdout`` (text): for tests that read
    the progress lines and signal the run mid-way. ``kw`` goes to ``subprocess.Popen``."""
    return subprocess.Popen(cli_cmd(*args, torchrun=torchrun), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=cli_env(env, fault), **kw)
