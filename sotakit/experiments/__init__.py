"""Experiments: ladder expansion, sweeps, the multi-seed runner (append-only, resumable), statistics."""

from .ablation import budget, expand, write_ladder_tables
from .runner import config_key, count_runs, read_results, run_recipes
from .stats import Summary, format_table, ladder_table, summarize, welch_p

__all__ = ["Summary", "budget", "config_key", "count_runs", "expand", "format_table", "ladder_table",
           "read_results", "run_recipes", "summarize", "welch_p", "write_ladder_tables"]
