"""fastai's ClassificationInterpretation on hand-built predictions: top losses and most-confused pairs."""

from __future__ import annotations

import math

import pytest
import torch

from sotakit.evaluate.interpret import most_confused, predictions_from, top_losses

CLASSES = ["cat", "dog", "fox"]
PROBS = torch.tensor([[0.7, 0.2, 0.1],   # cat, right
                      [0.1, 0.8, 0.1],   # true cat, said dog: loss -ln 0.1
                      [0.05, 0.9, 0.05],  # true fox, said dog: loss -ln 0.05, the worst
                      [0.3, 0.3, 0.4],   # fox, right but unsure
                      [0.2, 0.6, 0.2]])  # true cat, said dog: loss -ln 0.2
TARGETS = torch.tensor([0, 0, 2, 2, 0])


def test_top_losses_are_the_highest_losses_first_with_prediction_and_its_probability():
    p = predictions_from(PROBS, TARGETS)
    assert p.losses.tolist() == pytest.approx([-math.log(x) for x in (0.7, 0.1, 0.05, 0.4, 0.2)])
    tops = top_losses(p, 3)
    assert [t.index for t in tops] == [2, 1, 4]
    assert [(t.pred, t.target) for t in tops] == [(1, 2), (1, 0), (1, 0)]
    assert tops[0].loss == pytest.approx(-math.log(0.05)) and tops[0].prob == pytest.approx(0.9)
    assert len(top_losses(p, 10)) == 5


def test_most_confused_counts_off_diagonal_cells_largest_first():
    p = predictions_from(PROBS, TARGETS)
    assert most_confused(p, CLASSES) == [("cat", "dog", 2), ("fox", "dog", 1)]
    assert most_confused(p, CLASSES, min_count=2) == [("cat", "dog", 2)]
