"""One rank of tests/train/test_step_syncs.py's gloo job (launched by torchrun): trains a tiny model
under DDP with the host reads and collectives counted, a NaN loss on rank 1 only at step NAN_AT and a
stop request on rank 0 only after step STOP_AT, and writes what it saw to OUT/rank{R}.json."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from sotakit.train import Interrupted, train_one_epoch

sys.path.insert(0, str(Path(__file__).parent))
from step_counts import Counts  # noqa: E402


class _NaNOnRankAt(nn.Module):
    def __init__(self, rank: int, step: int):
        super().__init__()
        self.rank, self.step, self.calls = rank, step, 0

    def forward(self, logits, target):
        loss = nn.functional.cross_entropy(logits, target)
        self.calls += 1
        return loss * math.nan if dist.get_rank() == self.rank and self.calls - 1 == self.step else loss


def main(out: Path, steps: int, nan_at: int, stop_at: int) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(rank)
    data = [(torch.randn(6, 4, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(steps)]
    result = {}
    with Counts() as counts:
        try:
            stats = train_one_epoch(ddp, data, opt, criterion=_NaNOnRankAt(1, nan_at),
                                    device=torch.device("cpu"), epoch=0, print_freq=1000,
                                    max_nonfinite_skips=3,
                                    should_stop=lambda done: rank == 0 and done == stop_at)
            result["skipped"] = stats["skipped_steps"]
        except Interrupted as e:
            result["interrupted_at"] = e.step_in_epoch
    result.update(syncs=counts.syncs, collectives=counts.collectives,
                  weights=[p.detach().double().sum().item() for p in model.parameters()])
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), *map(int, sys.argv[2:5]))
