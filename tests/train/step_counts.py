"""Counting what waits for the device in a training step: host reads of tensors (``item``, ``tolist``,
``bool``/``int``/``float`` of a tensor) and ``torch.distributed`` collectives, while a ``with Counts()``
block runs. Imported as ``step_counts`` by tests/train (and the DDP worker, which adds its folder)."""

from __future__ import annotations

import torch
import torch.distributed as dist

_READS = ("item", "tolist", "__bool__", "__int__", "__float__")
_COLLECTIVES = ("all_reduce", "all_gather", "all_gather_object", "broadcast", "barrier")


class Counts:
    def __init__(self):
        self.syncs = self.collectives = 0
        self._saved: list[tuple[object, str, object]] = []

    def _wrap(self, owner, name: str, counter: str) -> None:
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            setattr(self, counter, getattr(self, counter) + 1)
            return original(*args, **kwargs)

        self._saved.append((owner, name, original))
        setattr(owner, name, counted)

    def __enter__(self) -> "Counts":
        for name in _READS:
            self._wrap(torch.Tensor, name, "syncs")
        for name in _COLLECTIVES:
            self._wrap(dist, name, "collectives")
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
