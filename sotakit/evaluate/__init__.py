"""Evaluation: metrics, evaluate (exact under DDP), confusion matrix."""

from .evaluate import autocast, confusion, evaluate
from .metrics import MetricSums, confusion_matrix, per_class_accuracy, topk_correct

__all__ = ["MetricSums", "autocast", "confusion", "confusion_matrix", "evaluate", "per_class_accuracy", "topk_correct"]
