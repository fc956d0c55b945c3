"""Evaluation: metrics, evaluate (exact under DDP), confusion matrix, inference resize tuning."""

from .evaluate import autocast, confusion, evaluate, to_device
from .metrics import MetricSums, confusion_matrix, per_class_accuracy, topk_correct
from .resize import ResizeTuning, default_sizes, parse_sizes, tune_resize
from .tta import evaluate_tta, parse_tta, tta_probabilities, tta_report

__all__ = ["MetricSums", "ResizeTuning", "autocast", "confusion", "confusion_matrix", "default_sizes",
           "evaluate", "evaluate_tta", "parse_sizes", "parse_tta", "per_class_accuracy", "to_device",
           "topk_correct", "tta_probabilities", "tta_report", "tune_resize"]
