"""Which images a model gets wrong and how badly: fastai's ``ClassificationInterpretation`` as functions.

``predictions`` collects softmax probabilities, targets and per-image losses over a loader (one process);
``top_losses`` orders the images by their loss, highest first (fastai's ``plot_top_losses``);
``most_confused`` lists the off-diagonal cells of the confusion matrix, largest first
(fastai's ``most_confused(min_val=1)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .evaluate import autocast
from .metrics import confusion_matrix


@dataclass
class Predictions:
    probs: torch.Tensor  # (N, C) softmax probabilities
    targets: torch.Tensor  # (N,) true classes
    losses: torch.Tensor  # (N,) cross-entropy of each image

    @property
    def preds(self) -> torch.Tensor:
        return self.probs.argmax(dim=1)


def predictions_from(probs: torch.Tensor, targets: torch.Tensor) -> Predictions:
    """Predictions of given probabilities: the loss of an image is -log p(true class)."""
    losses = -probs.gather(1, targets.view(-1, 1)).squeeze(1).clamp_min(1e-12).log()
    return Predictions(probs, targets, losses)


@torch.inference_mode()
def predictions(model: nn.Module, loader, *, device: torch.device | str = "cpu",
                amp_dtype: torch.dtype | None = None) -> Predictions:
    """Softmax probabilities, targets and losses of every image of ``loader``, in its order."""
    device = torch.device(device)
    model.eval()
    probs, targets = [], []
    for images, y in loader:
        with autocast(device, amp_dtype):
            logits = model(images.to(device))
        probs.append(logits.float().softmax(dim=1).cpu())
        targets.append(y)
    return predictions_from(torch.cat(probs), torch.cat(targets))


@dataclass(frozen=True)
class TopLoss:
    index: int  # position in the loader's order
    loss: float
    pred: int
    target: int
    prob: float  # the probability given to the predicted class


def top_losses(p: Predictions, k: int = 9) -> list[TopLoss]:
    """The ``k`` images with the highest loss, highest first (ties: the earlier image first)."""
    order = sorted(range(len(p.losses)), key=lambda i: (-p.losses[i].item(), i))[:k]
    return [TopLoss(i, p.losses[i].item(), int(p.preds[i]), int(p.targets[i]), p.probs[i].max().item())
            for i in order]


def most_confused(p: Predictions, classes: list[str], min_count: int = 1) -> list[tuple[str, str, int]]:
    """(true class, predicted class, count) for every off-diagonal cell with at least ``min_count``."""
    cm = confusion_matrix(p.preds, p.targets, len(classes))
    cells = [(classes[t], classes[q], int(cm[t, q])) for t in range(len(classes)) for q in range(len(classes))
             if t != q and cm[t, q] >= min_count]
    return sorted(cells, key=lambda c: -c[2])
