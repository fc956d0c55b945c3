"""Top-k accuracy counts and running sums; soft (mixed) targets count against their largest class."""

from __future__ import annotations

import torch
import torch.distributed as dist

from .calibration import CalibrationSums, calibration_result


def topk_hits(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> torch.Tensor:
    """Number of rows whose target class is among the top-k logits, for each k (k capped at classes), as a
    tensor on the logits' device: nothing waits for the device."""
    if target.ndim == 2:
        target = target.argmax(dim=1)
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hit = pred.eq(target.unsqueeze(1))
    return torch.stack([hit[:, : min(k, maxk)].any(dim=1).sum() for k in ks])


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[int]:
    """``topk_hits`` as numbers."""
    return [int(c) for c in topk_hits(logits, target, ks).tolist()]


def batch_sums(loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[loss x n, correct@1, correct@5, n] of one batch, float64 on the logits' device: a training step
    adds these there and the host reads them once per logging window (``MetricSums.add_sums`` at the end).
    The float64 sum of float32 losses is what summing ``loss.item() * n`` on the host gives."""
    n = torch.tensor(float(len(logits)), dtype=torch.float64, device=logits.device)
    hits = topk_hits(logits, targets).to(torch.float64)
    return torch.cat([(loss.detach().to(torch.float64) * n).reshape(1), hits, n.reshape(1)])


def reported_k(k: int, num_classes: int | None) -> bool:
    """Whether acc@k says anything: with k >= the number of classes every prediction is a hit."""
    return num_classes is None or k < num_classes


class MetricSums:
    """Sums of loss, correct@1, correct@5 and image count (and, with ``calibration``, the ECE, NLL and Brier
    sums); ``result`` adds them over all ranks."""

    def __init__(self, calibration: bool = False):
        self.sums = torch.zeros(4, dtype=torch.float64)
        self.calibration = CalibrationSums() if calibration else None  # evaluation's, not training's
        self.num_classes: int | None = None

    def add(self, loss: float, logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
        """Add one batch; return its correct@1 and correct@5 counts."""
        n = len(logits)
        self.num_classes = logits.shape[1]
        c1, c5 = topk_correct(logits, targets)
        self.sums += torch.tensor([loss * n, c1, c5, n], dtype=torch.float64)
        if self.calibration is not None:
            self.calibration.add(logits, targets)
        return c1, c5

    def add_sums(self, sums: torch.Tensor, num_classes: int | None) -> None:
        """Add ``batch_sums`` rows summed elsewhere (on the device: one read for many batches)."""
        self.sums += sums.cpu()
        self.num_classes = num_classes if num_classes is not None else self.num_classes

    def result(self, device: torch.device | str = "cpu") -> dict[str, float]:
        """Mean loss, acc@1 and acc@5 in percent, and ``n``; ECE (percent), NLL, Brier score and the
        reliability bins (calibration.py). Exact under DDP (sums, not means, are reduced). acc@5 is None
        with 5 classes or fewer (it would be 100% whatever the model)."""
        sums = self.sums
        calib = self.calibration.sums if self.calibration is not None else torch.zeros(0, dtype=sums.dtype)
        if dist.is_available() and dist.is_initialized():
            both = torch.cat([sums, calib.flatten()]).to(device)
            dist.all_reduce(both)
            both = both.cpu()
            sums, calib = both[:4], both[4:].view_as(calib)
        n = max(sums[3].item(), 1.0)
        return {"loss": sums[0].item() / n, "acc1": 100 * sums[1].item() / n,
                "acc5": 100 * sums[2].item() / n if reported_k(5, self.num_classes) else None,
                "n": int(sums[3].item()), **(calibration_result(calib) if calib.numel() else {})}


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts: row = true class, column = predicted class.

    One ``bincount`` over ``target * C + pred`` (the usual trick; torch has no confusion-matrix op).
    """
    if targets.ndim == 2:
        targets = targets.argmax(dim=1)
    idx = targets.long().flatten() * num_classes + preds.long().flatten()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(cm: torch.Tensor) -> torch.Tensor:
    """Recall of each class in percent (diagonal / row sum); NaN for a class with no images."""
    rows = cm.sum(dim=1).double()
    return (100 * cm.diagonal().double()
            / rows.where(rows > 0, torch.tensor(float("nan"), dtype=torch.float64)))
