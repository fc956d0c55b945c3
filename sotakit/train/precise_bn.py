"""Precise BatchNorm statistics (pycls ``core/net.py compute_precise_bn_stats``).

The running statistics BatchNorm keeps during training lag behind the weights (an exponential
average over steps whose weights differed). pycls replaces them before each evaluation by the
average of the batch statistics of a fixed number of training images (``BN.NUM_SAMPLES_PRECISE``
8192), with the training augmentation and the model in train mode, for the model and its EMA.

``torch.optim.swa_utils.update_bn`` computes exactly that: it resets the statistics and sets the
momentum to None, BatchNorm's cumulative average, so after k batches running_mean is the mean of
the k batch means and running_var the mean of the k (unbiased) batch variances, as pycls's
momentum-1.0 accumulation gives (neither adds the variance of the batch means). It is reused here on
the first ``samples // (batch x world_size)`` batches; under DDP the ranks' results are averaged.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.optim.swa_utils import update_bn


def precise_bn_batches(samples: int, *, batch_size: int, batches: int, world_size: int = 1) -> int:
    """pycls's ``int(samples / batch / world_size)``, at least 1, at most the loader's ``batches``."""
    return max(1, min(batches, samples // (batch_size * world_size)))


def update_precise_bn(model: nn.Module, loader, *, samples: int, device: torch.device | str | None = None,
                      world_size: int = 1) -> int:
    """Set every BatchNorm's running statistics of ``model`` to the average of the batch statistics of
    about ``samples`` images of ``loader`` (the train loader); return the number of batches used.
    The model's train/eval mode and the BatchNorm momenta are restored (update_bn does both)."""
    n = precise_bn_batches(samples, batch_size=loader.batch_size, batches=len(loader), world_size=world_size)
    update_bn(itertools.islice(loader, n), model, device=device)
    if world_size > 1 and torch.distributed.is_initialized():  # pycls all-reduces and averages
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for buf in (m.running_mean, m.running_var):
                    torch.distributed.all_reduce(buf)
                    buf.div_(world_size)
    return n
