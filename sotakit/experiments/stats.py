"""Summary statistics over seeds and the blog's stacked-improvements table.

Training is a random process, so a step is judged over several seeds (TorchVision blog,
"methodology"): n, mean, sample std, median, max (the blog reports the best of 3), and the
incremental and absolute differences of means. A Welch t-test (scipy) against the previous step
says whether a gain is distinguishable from seed noise.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for a single value
    median: float
    max: float


def summarize(values: list[float | None]) -> Summary:
    """None values (acc@5 on 5 classes or fewer is not reported) are left out; all None: n = 0, NaNs."""
    if not values:
        raise ValueError("no values to summarize")
    values = [v for v in values if v is not None]
    if not values:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Summary(len(values), statistics.fmean(values), std, statistics.median(values), max(values))


def mean_std(s: Summary, fmt: str = ".2f") -> str:
    """"71.20 ± 0.35"; a single value has no spread to show: "71.20 (n = 1)", never "± 0.00"."""
    return f"{s.mean:{fmt}} ± {s.std:{fmt}}" if s.n > 1 else f"{s.mean:{fmt}} (n = 1)"


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances); nan with fewer than 2 values a side."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    from scipy.stats import ttest_ind
    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    return float(ttest_ind(a, b, equal_var=False).pvalue)


@dataclass(frozen=True)
class LadderRow:
    step: str
    title: str
    acc1: Summary
    acc5: Summary
    incremental: float  # mean acc@1 minus the previous step's
    absolute: float  # mean acc@1 minus the first step's
    p_value: float  # Welch t-test against the previous step
    significant: bool


def ladder_table(steps: list[tuple[str, str]], acc1: dict[str, list[float]], acc5: dict[str, list[float]],
                 alpha: float = 0.05) -> list[LadderRow]:
    """Rows for the steps (name, title) that have results, in ladder order."""
    rows: list[LadderRow] = []
    first = prev = None
    for name, title in steps:
        if not acc1.get(name):
            continue
        s1, s5 = summarize(acc1[name]), summarize(acc5[name])
        first = first or s1
        p = welch_p(acc1[prev], acc1[name]) if prev else math.nan
        rows.append(LadderRow(name, title, s1, s5,
                              s1.mean - (summarize(acc1[prev]).mean if prev else s1.mean),
                              s1.mean - first.mean, p, bool(p < alpha) if not math.isnan(p) else False))
        prev = name
    return rows


def format_table(rows: list[LadderRow]) -> str:
    """The blog's table in Markdown, with spread over seeds and the significance of each gain."""
    head = ("| step | n | Acc@1 mean ± std | median | max | Acc@5 mean ± std | Incremental Diff | "
            "Absolute Diff | p (Welch, vs previous) |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        p = "" if math.isnan(r.p_value) else f"{r.p_value:.3f}" + ("" if r.significant else " (n.s.)")
        lines.append(f"| {r.title} | {r.acc1.n} | {mean_std(r.acc1)} | {r.acc1.median:.2f} "
                     f"| {r.acc1.max:.2f} | {mean_std(r.acc5)} | {r.incremental:+.2f} | "
                     f"{r.absolute:+.2f} | {p} |")
    return "\n".join(lines)
