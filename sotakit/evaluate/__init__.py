"""Evaluation: metrics, evaluate (exact under DDP), confusion matrix, inference resize tuning."""

from .evaluate import autocast, confusion, evaluate, to_device
from .metrics import MetricSums, confusion_matrix, per_class_accuracy, topk_correct
from .resize import ResizeTuning, default_sizes, parse_sizes, tune_resize

__all__ = ["MetricSums", "ResizeTuning", "autocast", "confusion", "confusion_matrix", "default_sizes",
           "evaluate", "parse_sizes", "per_class_accuracy", "to_device", "topk_correct", "tune_resize"]
