"""Test-time augmentation, as fastai's ``Learner.tta``, plus a flip TTA; reported apart as ``test_tta``.

fastai (learner.py): ``n`` prediction passes with the *training* transforms, their softmax
probabilities averaged, then blended with the plain (eval-transform) view:
``(1 - beta) * aug_mean + beta * plain``, beta 0.25. Here every augmented view of image ``j`` in pass
``p`` draws from its own seed ``sample_seed(seed, p, j)``, so the result does not depend on the batch
size, the workers or the number of ranks, and repeats exactly for a seed. ``flip``: the plain view and
its horizontal mirror, averaged. Probabilities are averaged (fastai with its flattened cross-entropy
applies softmax), and the metrics are those of the blended probabilities.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from ..data import SampleDataset, sample_seed
from .evaluate import autocast, to_device
from .metrics import MetricSums


def parse_tta(text: str | int | None) -> int | str | None:
    """'' or None: off; 'flip'; or a number N of augmented passes (N >= 1)."""
    if text in (None, "", 0, "0"):
        return None
    if str(text).lower() == "flip":
        return "flip"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"--tta takes a number of augmented passes (e.g. 4) or 'flip', got {text!r}")
    return n


class _Keyed(Sampler):
    """Positions of a dataset with each image's seed for pass ``view``: SampleDataset's ``(i, seed)``."""

    def __init__(self, indices: list[int], seed: int, view: int):
        self.indices, self.seed, self.view = indices, seed, view

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter([(i, sample_seed(self.seed, self.view, j)) for i, j in enumerate(self.indices)])


@torch.inference_mode()
def _probs(model, loader, device, amp_dtype, channels_last, flip=False) -> tuple[torch.Tensor, torch.Tensor]:
    out, targets = [], []
    for images, y in loader:
        images, y = to_device(images, y, device=device, channels_last=channels_last)
        if flip:
            images = images.flip(-1)
        with autocast(device, amp_dtype):
            out.append(model(images).float().softmax(dim=1).cpu())
        targets.append(y.cpu())
    return torch.cat(out), torch.cat(targets)


def augmented_views(loader: DataLoader, train_transform, *, n: int, seed: int) -> list[DataLoader]:
    """``n`` loaders over ``loader``'s images (same order, batch size, collate) with ``train_transform``."""
    ds = loader.dataset
    aug = SampleDataset(ds.source, ds.indices, train_transform, ds.max_decode_errors)
    return [DataLoader(aug, batch_size=loader.batch_size, sampler=_Keyed(ds.indices, seed, p),
                       collate_fn=loader.collate_fn, num_workers=loader.num_workers) for p in range(n)]


def tta_probabilities(model: nn.Module, loader: DataLoader, *, tta: int | str, beta: float = 0.25,
                      train_transform=None, seed: int = 0, device: torch.device | str = "cpu",
                      amp_dtype: torch.dtype | None = None,
                      channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, targets) of ``loader``'s images under TTA: ``tta`` = N passes or "flip"."""
    device = torch.device(device)
    model.eval()
    plain, targets = _probs(model, loader, device, amp_dtype, channels_last)
    if tta == "flip":
        mirrored, _ = _probs(model, loader, device, amp_dtype, channels_last, flip=True)
        return (plain + mirrored) / 2, targets
    if train_transform is None:
        raise ValueError("TTA with N passes needs the training transform")
    views = [_probs(model, v, device, amp_dtype, channels_last)[0]
             for v in augmented_views(loader, train_transform, n=int(tta), seed=seed)]
    aug_mean = torch.stack(views).mean(dim=0)
    return torch.lerp(aug_mean, plain, beta), targets  # (1 - beta) * aug_mean + beta * plain


def evaluate_tta(model: nn.Module, loader: DataLoader, **kw) -> dict:
    """loss, acc@1, acc@5 and n of the TTA probabilities (exact under DDP, as ``evaluate``), and the views."""
    probs, targets = tta_probabilities(model, loader, **kw)
    log_p = probs.clamp_min(1e-12).log()
    sums = MetricSums()
    if len(probs):
        sums.add(nn.functional.nll_loss(log_p, targets).item(), log_p, targets)
    tta = kw["tta"]
    beta = kw.get("beta", 0.25)
    views = "plain + horizontal flip" if tta == "flip" else f"{tta} augmented + plain, beta {beta}"
    return {**sums.result(kw.get("device", "cpu")), "tta": views}


def tta_report(model: nn.Module, loader: DataLoader, *, ema_model: nn.Module | None = None,
               tta: int | str | None, beta: float = 0.25, seed: int = 0, transform: dict | None = None,
               device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None,
               channels_last: bool = False) -> dict:
    """``{"test_tta": ..., "test_ema_tta": ...}`` for a run's final report; empty when ``tta`` is off.

    ``transform`` holds ``make_train_transform``'s arguments (the run's augmentation at its eval crop).
    """
    if tta is None:
        return {}
    from ..data import make_train_transform
    kw = dict(tta=tta, beta=beta, seed=seed, device=device, amp_dtype=amp_dtype, channels_last=channels_last,
              train_transform=make_train_transform(**transform) if transform and tta != "flip" else None)
    out = {"test_tta": evaluate_tta(model, loader, **kw)}
    if ema_model is not None:
        out["test_ema_tta"] = evaluate_tta(ema_model, loader, **kw)
    return out
