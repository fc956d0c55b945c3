"""Evaluation: metrics, evaluate (exact under DDP), inference resize tuning."""

from .evaluate import autocast, evaluate
from .metrics import MetricSums, topk_correct
from .resize import ResizeTuning, default_sizes, parse_sizes, tune_resize

__all__ = ["MetricSums", "ResizeTuning", "autocast", "default_sizes", "evaluate", "parse_sizes", "topk_correct",
           "tune_resize"]
