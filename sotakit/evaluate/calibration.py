"""Calibration: expected calibration error (15 bins), NLL, Brier score, and temperature scaling.

ECE follows Guo et al. 2017 ("On Calibration of Modern Neural Networks"): the top-1 confidences are
put into 15 equal-width bins over (0, 1]; ECE = sum over bins of (bin count / n) x |accuracy - mean
confidence|. The Brier score is the multi-class one: the mean over images of sum_k (p_k - y_k)^2
(0 is perfect, 2 the worst). Sums, not means, are kept per batch, so results are exact over any
batching and under DDP (the caller all-reduces ``CalibrationSums.sums``).

Temperature scaling divides the logits by one scalar T fitted by minimising the NLL on held-out data;
it changes confidences, never the top-1 class. Hand-written (torch has no ECE; torchmetrics is not a
dependency): a few tensor ops, pinned by tests on hand-built probabilities.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ECE_BINS = 15


def bin_index(confidence: torch.Tensor, bins: int = ECE_BINS) -> torch.Tensor:
    """The bin of each confidence: bin b holds (b/bins, (b+1)/bins], confidence 0 goes to bin 0."""
    return (confidence * bins).ceil().long().clamp(1, bins) - 1


class CalibrationSums:
    """Per-bin counts, confidence sums and correct counts, plus the NLL and Brier sums, of soft or
    hard targets (soft ones count against their largest class, like accuracy, and their Brier and NLL
    use the target distribution)."""

    def __init__(self, bins: int = ECE_BINS):
        self.bins = bins
        # rows: count, sum of confidence, correct; then one row [nll sum, brier sum, n, 0...]
        self.sums = torch.zeros(4, bins, dtype=torch.float64)

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        logits = logits.detach().float()
        probs = logits.softmax(dim=1)
        onehot = (targets.float() if targets.ndim == 2
                  else F.one_hot(targets.long(), logits.shape[1]).float()).to(probs.device)
        conf, pred = probs.max(dim=1)
        correct = (pred == onehot.argmax(dim=1)).double()
        b = bin_index(conf).cpu()
        self.sums[0].index_add_(0, b, torch.ones_like(correct).cpu())
        self.sums[1].index_add_(0, b, conf.double().cpu())
        self.sums[2].index_add_(0, b, correct.cpu())
        nll = -(onehot * logits.log_softmax(dim=1)).sum(dim=1)
        brier = ((probs - onehot) ** 2).sum(dim=1)
        self.sums[3, 0] += nll.double().sum().item()
        self.sums[3, 1] += brier.double().sum().item()
        self.sums[3, 2] += len(logits)

    def result(self, sums: torch.Tensor | None = None) -> dict:
        """``ece`` (percent, like accuracy), ``nll`` (nats per image), ``brier``, and ``reliability``:
        per bin the image count, mean confidence and accuracy (percent; None for an empty bin)."""
        s = self.sums if sums is None else sums
        return calibration_result(s)


def calibration_result(s: torch.Tensor) -> dict:
    """The metrics of ``CalibrationSums.sums`` (summed over ranks by the caller)."""
    n = max(s[3, 2].item(), 1.0)
    count, conf, correct = s[0], s[1], s[2]
    ece = (correct - conf).abs().sum().item() / n
    filled = count > 0
    mean_conf = torch.where(filled, conf / count.clamp(min=1), torch.nan)
    acc = torch.where(filled, correct / count.clamp(min=1), torch.nan)
    return {"ece": 100 * ece, "nll": s[3, 0].item() / n, "brier": s[3, 1].item() / n,
            "reliability": {"count": [int(c) for c in count.tolist()],
                            "confidence": [None if math.isnan(v) else 100 * v for v in mean_conf.tolist()],
                            "accuracy": [None if math.isnan(v) else 100 * v for v in acc.tolist()]}}


def calibration_metrics(logits: torch.Tensor, targets: torch.Tensor, bins: int = ECE_BINS) -> dict:
    """ECE, NLL and Brier of one set of logits (``CalibrationSums`` over one batch)."""
    sums = CalibrationSums(bins)
    sums.add(logits, targets)
    return sums.result()


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, *, max_iter: int = 100) -> float:
    """The temperature T > 0 minimising the mean NLL of ``softmax(logits / T)`` (Guo et al. 2017).

    Optimised over log T with L-BFGS (T stays positive; the NLL is smooth and, in 1/T, convex), on
    float64 so the optimum is exact to ~1e-6 for the tests' hand-built logits.
    """
    z = logits.detach().clone().double()  # clone: logits made under inference_mode cannot enter autograd
    y = targets.long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss
    opt.step(closure)
    return float(log_t.exp().item())


@torch.no_grad()  # not inference_mode: the temperature fit differentiates through these logits
def collect_logits(model: torch.nn.Module, loader, *, device: torch.device | str = "cpu",
                   progress=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) of ``model`` over ``loader``, on the CPU in float32 (one process);
    ``progress(batches_done, batches_total)`` after each batch."""
    model.eval()
    logits, targets = [], []
    for i, (images, y) in enumerate(loader, 1):
        logits.append(model(images.to(device)).float().cpu())
        targets.append(y.argmax(dim=1) if y.ndim == 2 else y)
        if progress is not None:
            progress(i, len(loader))
    return torch.cat(logits), torch.cat(targets)
