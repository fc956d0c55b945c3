"""Experiments: ladder expansion, the multi-seed runner (append-only, resumable), statistics."""

from .ablation import budget, expand, recipe_hash, run_ablation, write_report
from .stats import Summary, format_table, ladder_table, summarize, welch_p

__all__ = ["Summary", "budget", "expand", "format_table", "ladder_table", "recipe_hash", "run_ablation",
           "summarize", "welch_p", "write_report"]
