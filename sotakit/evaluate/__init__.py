"""Evaluation: metrics, evaluate (exact under DDP)."""

from .evaluate import autocast, evaluate
from .metrics import MetricSums, topk_correct

__all__ = ["MetricSums", "autocast", "evaluate", "topk_correct"]
