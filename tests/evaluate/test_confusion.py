"""Confusion matrix and per-class accuracy against hand-computed values, and against evaluate()."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sotakit.evaluate import confusion, confusion_matrix, evaluate, per_class_accuracy


def test_confusion_matrix_by_hand():
    preds = torch.tensor([0, 1, 1, 2, 2, 2, 0])
    targets = torch.tensor([0, 1, 2, 2, 2, 0, 0])
    cm = confusion_matrix(preds, targets, 3)
    # true 0 -> predicted 0, 2, 0; true 1 -> 1; true 2 -> 1, 2, 2
    assert cm.tolist() == [[2, 0, 1], [0, 1, 0], [0, 1, 2]]
    assert cm.sum(dim=1).tolist() == [3, 1, 3] == torch.bincount(targets, minlength=3).tolist()
    assert per_class_accuracy(cm).tolist() == pytest.approx([200 / 3, 100.0, 200 / 3])
    # soft (mixed) targets count against their largest class, as topk_correct does
    soft = torch.nn.functional.one_hot(targets, 3).float() * 0.7 + 0.1
    assert torch.equal(confusion_matrix(preds, soft, 3), cm)


def test_per_class_accuracy_is_diagonal_over_row_sum_and_nan_for_absent_classes():
    cm = torch.tensor([[5, 1, 0], [2, 2, 4], [0, 0, 0]])
    acc = per_class_accuracy(cm)
    assert acc[:2].tolist() == pytest.approx([100 * 5 / 6, 100 * 2 / 8])
    assert math.isnan(acc[2].item())


def test_confusion_over_a_loader_agrees_with_evaluate():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 50, 16)]
    cm = confusion(model, loader, num_classes=3)
    with torch.no_grad():
        expected = confusion_matrix(model(x).argmax(1), y, 3)
    assert torch.equal(cm, expected)
    assert cm.sum(dim=1).tolist() == torch.bincount(y, minlength=3).tolist()
    assert 100 * cm.diagonal().sum().item() / 50 == pytest.approx(evaluate(model, loader)["acc1"])
