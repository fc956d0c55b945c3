"""ECE (15 bins), NLL, Brier and the temperature fit, on hand-built logits with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from sotakit.evaluate import evaluate
from sotakit.evaluate.calibration import bin_index, calibration_metrics, fit_temperature


def logits_for(probs: list[list[float]]) -> torch.Tensor:
    """Logits whose softmax is ``probs`` exactly (up to float rounding): log p."""
    return torch.tensor(probs, dtype=torch.float64).log()


def test_bins_are_right_closed_fifteenths():
    conf = torch.tensor([0.0, 1 / 15, 1 / 15 + 1e-9, 0.5, 1.0], dtype=torch.float64)
    assert bin_index(conf).tolist() == [0, 0, 1, 7, 14]


def test_ece_nll_brier_match_the_formulas():
    # Four images: confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right).
    probs = [[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]]
    targets = torch.tensor([0, 1, 1, 0])
    m = calibration_metrics(logits_for(probs), targets)
    # bin of 0.9 (index 13): acc 0.5, conf 0.9, weight 2/4; bin of 0.6 (index 8): acc 1.0, conf 0.6, 2/4
    assert m["ece"] == pytest.approx(100 * (0.5 * 0.4 + 0.5 * 0.4))
    assert m["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.1) + 2 * math.log(0.6)) / 4)
    assert m["brier"] == pytest.approx((2 * 0.1 ** 2 + 2 * 0.9 ** 2 + 4 * 0.4 ** 2) / 4)
    rel = m["reliability"]
    assert rel["count"][13] == 2 and rel["count"][8] == 2 and sum(rel["count"]) == 4
    assert rel["accuracy"][13] == pytest.approx(50.0) and rel["confidence"][8] == pytest.approx(60.0)
    assert rel["accuracy"][0] is None


def test_evaluate_reports_calibration_beside_accuracy():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.5, 0.2, 3.0]])
    targets = torch.tensor([0, 2, 2])
    model = torch.nn.Identity()
    out = evaluate(model, [(logits, targets)])
    ref = calibration_metrics(logits, targets)
    assert out["acc1"] == pytest.approx(200 / 3)
    assert out["ece"] == pytest.approx(ref["ece"]) and out["brier"] == pytest.approx(ref["brier"])
    assert out["nll"] == pytest.approx(out["loss"])  # eval loss is plain cross-entropy


def test_temperature_fit_finds_the_known_optimum():
    # Two classes, every image has logits (a, 0); a fraction p is labelled class 0. The NLL of
    # softmax(z / T) is minimised where sigmoid(a / T) = p, i.e. T* = a / logit(p).
    a, p, n = 4.0, 0.8, 1000
    logits = torch.tensor([[a, 0.0]]).repeat(n, 1)
    targets = torch.tensor([0] * int(p * n) + [1] * (n - int(p * n)))
    t = fit_temperature(logits, targets)
    assert t == pytest.approx(a / math.log(p / (1 - p)), rel=1e-5)


def test_temperature_below_one_for_underconfident_logits():
    # Labels always match the argmax but logits are tiny: sharpening (T < 1) lowers the NLL.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 5, generator=g) * 0.1
    targets = logits.argmax(dim=1)
    t = fit_temperature(logits, targets)
    before = calibration_metrics(logits, targets)["nll"]
    after = calibration_metrics(logits / t, targets)["nll"]
    assert t < 0.2 and after < before
