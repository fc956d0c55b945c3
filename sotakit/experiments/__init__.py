"""Experiments: ladder expansion, sweeps, the multi-seed runner (append-only, resumable), statistics."""

from .ablation import budget, expand, write_report
from .runner import read_results, recipe_hash, run_recipes
from .stats import Summary, format_table, ladder_table, summarize, welch_p

__all__ = ["Summary", "budget", "expand", "format_table", "ladder_table", "read_results", "recipe_hash",
           "run_recipes", "summarize", "welch_p", "write_report"]
