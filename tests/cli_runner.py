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


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now (for a rendezvous)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_nodes(*args, nodes: int = 2, env=None, fault: str = "",
              timeout: float = 300) -> list[tuple[int, str]]:
    """``torchrun --nnodes N --nproc_per_node 1`` started N times on this machine, as N "nodes" meeting
    in a c10d rendezvous on 127.0.0.1 (what a multi-node job runs, over loopback); waits for all and
    returns each node's (exit code, output)."""
    rdzv = ["--nnodes", nodes, "--nproc_per_node", 1, "--rdzv_backend", "c10d",
            "--rdzv_endpoint", f"127.0.0.1:{free_port()}", "--rdzv_id", "loopback", "--max_restarts", 0]
    cmd = [sys.executable, "-m", "torch.distributed.run", *map(str, rdzv), "-m", "sotakit", *map(str, args)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=cli_env(env, fault)) for _ in range(nodes)]
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append((p.returncode, out))
    return outs
