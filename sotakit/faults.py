"""Fault injection, for the reliability tests only (tests/faults, ``make faults``); not a user feature.

Standard library only: a leaf every layer may import (the data layer too).

``SOTAKIT_FAULT="name:N[,name:N]"`` makes the named fault fire at N:

- ``kill_in_save:N``  the N-th checkpoint save of the process SIGKILLs it halfway through the write;
- ``kill_at:N``       SIGKILL after global step N (counted from 1) is done;
- ``nan_at:N``        the loss of global step N becomes NaN;
- ``hang_at:N``       the process stops itself (SIGSTOP) after global step N (a hung DDP rank),
                      on the rank given by ``SOTAKIT_FAULT_RANK`` (default: every rank);
- ``hang_in_load:N``  the N-th image load of a process (a DataLoader worker) blocks forever, as on a
                      stalled network file system;
- ``hup_at:N``        the process sends itself SIGHUP after global step N (an ssh session closed);
- ``fill_disk_at:N``  after global step N the file ``SOTAKIT_FAULT_FILL`` is written until the disk is
                      full (ENOSPC): the next write of the run meets a real full disk;
- ``eval_delay_ms:N`` every evaluation batch takes N ms longer (so a test can signal mid-evaluation).

The variable is read when a hook is asked, so a test sets it in the child's environment.
"""

from __future__ import annotations

import functools
import os
from collections import Counter

_calls: Counter = Counter()


def _spec() -> dict[str, int]:
    return _parse(os.environ.get("SOTAKIT_FAULT", ""))


@functools.lru_cache(maxsize=8)
def _parse(text: str) -> dict[str, int]:
    """Parsed once per value: the hooks are asked every step and every image load."""
    out = {}
    for part in filter(None, text.split(",")):
        name, _, n = part.partition(":")
        out[name.strip()] = int(n)
    return out


def fault_at(name: str, value: int, rank: int = 0) -> bool:
    """True when fault ``name`` is set to ``value`` (and aimed at this rank)."""
    spec = _spec()
    if name not in spec or spec[name] != value:
        return False
    target = os.environ.get("SOTAKIT_FAULT_RANK")
    return target is None or int(target) == rank


def fault_count(name: str) -> bool:
    """Count a call of hook ``name``; true on the N-th call when ``name:N`` is set."""
    spec = _spec()
    if name not in spec:
        return False
    _calls[name] += 1
    return _calls[name] == spec[name]


def after_step(global_step: int, rank: int = 0) -> None:
    """The step-count faults: ``kill_at`` (SIGKILL) and ``hang_at`` (SIGSTOP) after step N."""
    import signal
    if fault_at("kill_at", global_step, rank):
        os.kill(os.getpid(), signal.SIGKILL)
    if fault_at("hang_at", global_step, rank):
        os.kill(os.getpid(), signal.SIGSTOP)
    if fault_at("hup_at", global_step, rank):
        os.kill(os.getpid(), signal.SIGHUP)
    if fault_at("fill_disk_at", global_step, rank):
        fill_disk(os.environ["SOTAKIT_FAULT_FILL"])


def fill_disk(path: str) -> None:
    """Write ``path`` until the file system has no space left."""
    block = b"\0" * (1 << 16)
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass
        try:  # the last partial block
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass


def in_evaluation() -> None:
    """``eval_delay_ms``: an evaluation batch made slower."""
    ms = _spec().get("eval_delay_ms")
    if ms:
        import time
        time.sleep(ms / 1000)
