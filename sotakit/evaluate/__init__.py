"""Evaluation: metrics, evaluate (exact under DDP)."""

from .evaluate import autocast, evaluate
from .metrics import topk_correct

__all__ = ["autocast", "evaluate", "topk_correct"]
