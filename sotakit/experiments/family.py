"""A model family trained with one recipe over seeds: `sotakit train --model 'regnetx_00*' --seeds N`.

The Keras RegNet write-up trained 24 models in parallel and kept their logs in one place. Here each
matching model is one grid point of the sweep machinery (``sweep.expand_grid`` over ``model``), run
by the shared runner (resumable results.jsonl, ``--jobs`` at once, runs under FAMILY_DIR/runs), and
tabulated from that file: model, parameters and FLOPs at the runs' eval crop, acc@1/acc@5 mean ± std
over seeds, train time and img/s, with a plot of accuracy against FLOPs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..data import load_data
from ..models import build_meta_model, count_flops, count_parameters, list_models
from ..recipes import Recipe, RecipeError, load_recipe
from ..train.recipe_kwargs import model_build_kwargs
from .runner import Entry, reported_acc, results_for
from .stats import Summary, mean_std, summarize
from .sweep import expand_grid

FAMILY_CHARS = "*?[,"  # a --model value holding one of these names several models


def is_family(model: str | None) -> bool:
    return model is not None and any(c in model for c in FAMILY_CHARS)


def match_models(spec: str) -> list[str]:
    """The registered models a pattern or comma list names, in registry order, each once."""
    out: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        found = list_models(part)
        if not found:
            raise RecipeError(f"--model {part!r} matches no model; `sotakit models '{part}'` lists the names "
                              "(quote patterns so the shell leaves them alone)")
        out += [m for m in found if m not in out]
    return out


def expand_family(base: Recipe, models: list[str], out_dir: Path) -> list[Entry]:
    """One recipe file per model (FAMILY_DIR/points/model-NAME.toml), validated before any run starts."""
    return expand_grid(base, {"model": models}, out_dir)


@dataclass(frozen=True)
class FamilyRow:
    model: str
    params: int
    flops: int  # FLOPs (multiply-add = 2) of one image at the runs' eval crop
    crop: int
    acc1: Summary
    acc5: Summary
    train_time_s: float | None  # mean over seeds
    img_s: float | None  # mean over seeds of the runs' median training img/s


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def family_rows(entries: list[Entry], records: list[dict]) -> list[FamilyRow]:
    """One row per model with results, by FLOPs; complexity counted on meta as the runs built the model."""
    rows, bundle = [], None
    for name, _, _ in entries:
        recs = [r for r in records if r["step"] == name]
        if not recs:
            continue
        run = load_recipe(Path(recs[0]["run_dir"]) / "recipe.toml")  # resolved: the crop the run used
        bundle = bundle or load_data(run.data, run.data_root)
        built = model_build_kwargs(run, num_classes=len(bundle.classes), native_size=bundle.native_size)
        model = build_meta_model(**built)
        accs = [reported_acc(r) for r in recs]
        rows.append(FamilyRow(run.model, count_parameters(model), count_flops(model, run.val_crop_size),
                              run.val_crop_size, summarize([a for a, _ in accs]),
                              summarize([b for _, b in accs]), _mean([r.get("train_time_s") for r in recs]),
                              _mean([r.get("img_s") for r in recs])))
    return sorted(rows, key=lambda r: (r.flops, r.model))


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def format_family(rows: list[FamilyRow]) -> str:
    lines = ["| model | params (M) | GFLOPs | n | acc@1 mean ± std | acc@5 mean ± std | train time (s) | "
             "img/s |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.model} | {r.params / 1e6:.2f} | {r.flops / 1e9:.3f} | {r.acc1.n} | {mean_std(r.acc1)} | "
              f"{mean_std(r.acc5) if r.acc5.n else '-'} | {_num(r.train_time_s, '.0f')} | "
              f"{_num(r.img_s, '.0f')} |" for r in rows]
    return "\n".join(lines)


def write_family(entries: list[Entry], out_dir: Path) -> tuple[list[FamilyRow], str]:
    """family.md, family.csv and family.png from results.jsonl; returns the rows and the Markdown table."""
    rows = family_rows(entries, results_for(entries, out_dir))
    text = format_family(rows)
    crops = sorted({r.crop for r in rows})
    (out_dir / "family.md").write_text(f"{text}\n\nGFLOPs: one {'/'.join(map(str, crops))} px image, "
                                       "multiply-add = 2 FLOPs; acc@1/acc@5 on the test split (EMA model "
                                       "when the recipe keeps one), over seeds.\n")
    csv = ["model,params,flops,crop,n,acc1_mean,acc1_std,acc5_mean,acc5_std,train_time_s,img_s"]
    csv += [f"{r.model},{r.params},{r.flops},{r.crop},{r.acc1.n},{r.acc1.mean:.4f},{r.acc1.std:.4f},"
            f"{r.acc5.mean:.4f},{r.acc5.std:.4f},{_num(r.train_time_s, '.1f')},{_num(r.img_s, '.1f')}"
            for r in rows]
    (out_dir / "family.csv").write_text("\n".join(csv) + "\n")
    plot_family(rows, out_dir / "family.png")
    return rows, text


def plot_family(rows: list[FamilyRow], path: Path) -> None:
    """Mean acc@1 ± std against GFLOPs (log scale), each point named by its model."""
    if not rows:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [r.flops / 1e9 for r in rows]
    ax.errorbar(xs, [r.acc1.mean for r in rows], yerr=[0 if math.isnan(r.acc1.std) else r.acc1.std
                                                        for r in rows],
                fmt="o", capsize=4, label=f"mean acc@1 ± std (n={min(r.acc1.n for r in rows)}+ seeds)")
    for r, x in zip(rows, xs):
        ax.annotate(r.model, (x, r.acc1.mean), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"GFLOPs per image at {'/'.join(map(str, sorted({r.crop for r in rows})))} px (log)")
    ax.set_ylabel("test acc@1 (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title("model family: accuracy against FLOPs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
