"""Grid sweeps: the cartesian product of a few recipe knobs, run over seeds by the shared runner.

The blog tunes single knobs with grid searches (e.g. the random-erasing probability). Every grid
point becomes a recipe file first (pycls's "expanded to files before launch"), runs go through
runner.py (same resumable results.jsonl as ablate), and the table and plot are made from that file:
sorted by mean acc@1 with std and n; a line plot with error bars for one knob, a heat map for two.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

from ..recipes import Recipe, RecipeError, dump_recipe, load_recipe, make_recipe
from ..recipes.recipe import FIELDS, closest, coerce
from ..train.checkpoint import write_text_atomic
from .runner import Entry, fold_table, reported_acc, results_for
from .stats import Summary, mean_std, summarize


def parse_assignment(flag: str, item: str) -> tuple[str, str]:
    """``KEY=VALUE`` of a ``--set``/``--grid`` flag, the key checked against the Recipe's field names."""
    key, sep, value = item.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not value.strip():
        raise RecipeError(f"{flag} {item!r}: expected KEY=VALUE (for example {flag} lr=0.2)")
    if key not in FIELDS:
        raise RecipeError(f"{flag} {key}: unknown recipe key.{closest(key, FIELDS)}")
    return key, value.strip()


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """--set KEY=VALUE flags as overrides (typed later by make_recipe)."""
    return dict(parse_assignment("--set", item) for item in items or [])


def parse_grid(items: list[str]) -> dict[str, list]:
    """--grid KEY=V1,V2,... flags as {key: typed values}, typed by the Recipe field ("none" unsets)."""
    grid: dict[str, list] = {}
    for item in items:
        key, values = parse_assignment("--grid", item)
        if key in grid:
            raise RecipeError(f"--grid {key} given twice; list all its values in one flag: "
                              f"--grid {key}=A,B,C")
        raw = [v.strip() for v in values.split(",") if v.strip()]
        typed = [None if v.lower() == "none" and FIELDS[key].default is None else coerce(key, v) for v in raw]
        if len(set(typed)) != len(typed):
            raise RecipeError(f"--grid {key}: repeated value in {values!r}")
        grid[key] = typed
    return grid


def point_name(point: dict) -> str:
    """A file-name-safe name of a grid point: ``random_erase-0.1_lr-0.2``."""
    return "_".join(f"{k}-{v}" for k, v in point.items()).replace("/", "-")


def expand_grid(base: Recipe, grid: dict[str, list], out_dir: Path) -> list[Entry]:
    """Write one recipe file per grid point into ``out_dir/points``; return (name, title, path) entries.

    Every point is validated here, so a bad combination fails before any run starts.
    """
    points_dir = out_dir / "points"
    points_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values, strict=True))
        recipe = make_recipe(base, **point)
        title = " ".join(f"{k}={v}" for k, v in point.items())
        path = points_dir / f"{point_name(point)}.toml"
        # atomic: an experiment already running in this directory may be reading it
        write_text_atomic(path, dump_recipe(recipe, {"title": title, "step": point_name(point)}))
        out.append((path.stem, title, path))
    return out


@dataclass(frozen=True)
class SweepRow:
    name: str
    point: dict
    acc1: Summary
    acc5: Summary


def sweep_rows(entries: list[Entry], grid: dict[str, list], records: list[dict]) -> list[SweepRow]:
    """One row per grid point with results, best mean acc@1 first."""
    rows = []
    for name, _, path in entries:
        values = [reported_acc(r) for r in records if r["step"] == name]
        if values:
            recipe = load_recipe(path)
            rows.append(SweepRow(name, {k: getattr(recipe, k) for k in grid},
                                 summarize([a for a, _ in values]), summarize([b for _, b in values])))
    return sorted(rows, key=lambda r: -r.acc1.mean)


def format_sweep(rows: list[SweepRow], grid: dict[str, list]) -> str:
    head = "| " + " | ".join(grid) + " | n | Acc@1 mean ± std | median | max | Acc@5 mean ± std |"
    lines = [head, "|" + "---|" * (len(grid) + 5)]
    for r in rows:
        lines.append("| " + " | ".join(str(v) for v in r.point.values()) + f" | {r.acc1.n} | "
                     f"{mean_std(r.acc1)} | {r.acc1.median:.2f} | {r.acc1.max:.2f} | {mean_std(r.acc5)} |")
    return "\n".join(lines)


def write_sweep(entries: list[Entry], grid: dict[str, list],
                out_dir: Path) -> tuple[list[SweepRow], str, str | None]:
    """sweep.md, sweep.csv and (one or two knobs) sweep.png from results.jsonl.

    Returns the rows, the Markdown table and, for K-fold runs, the per-fold table (else None).
    """
    recs = results_for(entries, out_dir)
    rows = sweep_rows(entries, grid, recs)
    text = format_sweep(rows, grid)
    folds = fold_table(entries, recs)
    md = text + ("\n\nK-fold validation acc@1 per fold (the table above is over these folds x seeds):"
                 f"\n\n{folds}" if folds else "")
    (out_dir / "sweep.md").write_text(md + "\n")
    csv = [",".join([*grid, "n", "acc1_mean", "acc1_std", "acc1_median", "acc1_max", "acc5_mean",
                     "acc5_std"])]
    csv += [",".join([*(str(v) for v in r.point.values()), str(r.acc1.n)] + [
        f"{x:.4f}" for x in (r.acc1.mean, r.acc1.std, r.acc1.median, r.acc1.max, r.acc5.mean, r.acc5.std)])
        for r in rows]
    (out_dir / "sweep.csv").write_text("\n".join(csv) + "\n")
    plot_sweep(grid, rows, out_dir / "sweep.png")
    return rows, text, folds


def plot_sweep(grid: dict[str, list], rows: list[SweepRow], path: Path):
    """Line plot with error bars (one knob) or heat map of mean acc@1 (two knobs); None for more knobs."""
    if len(grid) > 2 or not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_point = {tuple(r.point.values()): r for r in rows}
    keys = list(grid)
    fig, ax = plt.subplots(figsize=(6, 4))
    if len(grid) == 1:
        xs = [v for v in grid[keys[0]] if (v,) in by_point]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
        pos = xs if numeric else list(range(len(xs)))
        ax.errorbar(pos, [by_point[(v,)].acc1.mean for v in xs], yerr=[by_point[(v,)].acc1.std for v in xs],
                    fmt="o-", capsize=4,
                    label=f"mean acc@1 ± std (n={min(by_point[(v,)].acc1.n for v in xs)}+)")
        if not numeric:
            ax.set_xticks(pos, [str(v) for v in xs])
        ax.set_xlabel(keys[0])
        ax.set_ylabel("acc@1 (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    else:
        ys, xs = grid[keys[0]], grid[keys[1]]
        cells = [[by_point[(a, b)].acc1.mean if (a, b) in by_point else math.nan for b in xs] for a in ys]
        im = ax.imshow(cells, cmap="viridis", aspect="auto")
        for i, row in enumerate(cells):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w", fontsize=9)
        ax.set_xticks(range(len(xs)), [str(v) for v in xs])
        ax.set_yticks(range(len(ys)), [str(v) for v in ys])
        ax.set_xlabel(keys[1])
        ax.set_ylabel(keys[0])
        fig.colorbar(im, ax=ax, label="mean acc@1 (%)")
    ax.set_title("sweep: mean acc@1 over seeds (and folds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig
