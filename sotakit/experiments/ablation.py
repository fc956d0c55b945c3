"""The stacked-improvements ablation: expand a ladder to recipe files, run (step, seed), tabulate.

Follows the TorchVision blog's method; the runs go through the shared resumable runner
(runner.py), so an interrupted ablation resumes by re-running the same command.
"""

from __future__ import annotations

from pathlib import Path

from ..recipes import Recipe, dump_recipe, load_ladder, make_recipe
from ..recipes.presets import SMALL_DATA_EMA_HORIZON
from ..train.checkpoint import write_text_atomic
from .runner import fold_table, reported_acc, results_for
from .stats import format_table, ladder_table, mean_std, summarize

DEFAULT_LONG_FACTOR = 600 / 90  # the blog's long-training step: 90 -> 600 epochs


def budget(recipe: Recipe, *, epochs: int, long: bool, long_factor: float = DEFAULT_LONG_FACTOR) -> Recipe:
    """The step's recipe at a short-cycle budget: ``epochs`` (times ``long_factor`` from the long step on).

    Epoch-denominated knobs (warm-up, StepLR step) keep their share of the run. A warm-up as long as
    the run or longer stays so (``recipes.recipe.warmup_note``, the rule train applies): the budget
    never shrinks it behind the user's back. The EMA's horizon becomes a tenth of the run's updates
    (``--model-ema-horizon 0.1`` unless set): the reference's decay is written for ImageNet's budget.
    """
    target = max(1, round(epochs * long_factor)) if long else epochs
    scale = target / recipe.epochs
    warmup = round(recipe.lr_warmup_epochs * scale)
    steplr = recipe.lr_scheduler == "steplr"
    step = {"lr_step_size": max(1, round(recipe.lr_step_size * scale))} if steplr else {}
    ema = ({"model_ema_horizon": SMALL_DATA_EMA_HORIZON}
           if recipe.model_ema and recipe.model_ema_horizon is None else {})
    # Two-phase progressive resizing keeps its share too, with at least one epoch at full size.
    small = recipe.progressive_resize_epochs
    phases = {"progressive_resize_epochs": min(target - 1, max(1, round(small * scale)))} if small else {}
    return make_recipe(recipe, epochs=target, lr_warmup_epochs=max(0, warmup), **step, **ema, **phases)


def expand(ladder: str, out_dir: Path, *, epochs: int, long_factor: float = DEFAULT_LONG_FACTOR,
           overrides: dict | None = None) -> list[tuple[str, str, Path]]:
    """Write one resolved recipe file per step into ``out_dir/steps``; return (name, title, path)."""
    steps_dir = out_dir / "steps"
    steps_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for step in load_ladder(ladder):
        base = make_recipe(step.recipe, **(overrides or {}))
        r = budget(base, epochs=epochs, long=step.long, long_factor=long_factor)
        path = steps_dir / f"{step.name}.toml"
        write_text_atomic(path, dump_recipe(r, {"title": step.title, "step": step.name}))  # may be read now
        out.append((step.name, step.title, path))
    return out


def write_ladder_tables(steps: list[tuple[str, str, Path]], out_dir: Path) -> str:
    """ablation.md, ablation.csv and ablation.png from results.jsonl; returns the Markdown table(s)."""
    recs = results_for(steps, out_dir)
    acc1, acc5 = {}, {}
    for r in recs:
        a1, a5 = reported_acc(r)  # EMA model when there is one; the validation fold under --kfold
        acc1.setdefault(r["step"], []).append(a1)
        acc5.setdefault(r["step"], []).append(a5)
    rows = ladder_table([(n, t) for n, t, _ in steps], acc1, acc5)
    table = format_table(rows)
    folds = fold_table(steps, recs)
    if folds:
        table += ("\n\nK-fold validation acc@1 per fold (the table above is over these folds x seeds):\n\n"
                  + folds)
    tta = tta_table(steps, recs)
    if tta:
        table += ("\n\nTest-time augmentation, reported apart (test_tta; the table above is without it):"
                  "\n\n" + tta)
    (out_dir / "ablation.md").write_text(table + "\n")
    csv = ["step,n,acc1_mean,acc1_std,acc1_median,acc1_max,acc5_mean,acc5_std,incremental,absolute,p_value"]
    csv += [f"{r.step},{r.acc1.n},{r.acc1.mean:.4f},{r.acc1.std:.4f},{r.acc1.median:.4f},{r.acc1.max:.4f},"
            f"{r.acc5.mean:.4f},{r.acc5.std:.4f},{r.incremental:.4f},{r.absolute:.4f},{r.p_value:.6g}"
            for r in rows]
    (out_dir / "ablation.csv").write_text("\n".join(csv) + "\n")
    _plot(rows, out_dir / "ablation.png")
    return table


def tta_table(steps: list[tuple[str, str, Path]], recs: list[dict]) -> str:
    """TTA acc@1 beside the plain acc@1 of the same runs, for the steps whose runs report test_tta."""
    lines = []
    for name, title, _ in steps:
        mine = [r for r in recs if r["step"] == name and r.get("tta_acc1") is not None]
        if mine:
            tta = summarize([r["tta_acc1"] for r in mine])
            plain = summarize([reported_acc(r)[0] for r in mine])
            gain = tta.mean - plain.mean
            lines.append(f"| {title} | {tta.n} | {mean_std(tta)} | {mean_std(plain)} | {gain:+.2f} |")
    if not lines:
        return ""
    head = "| step | n | TTA acc@1 mean ± std | plain acc@1 mean ± std | TTA gain |"
    return "\n".join([head, "|" + "---|" * 5, *lines])


def _plot(rows, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(rows) + 2), 4))
    x = range(len(rows))
    ax.errorbar(x, [r.acc1.mean for r in rows], yerr=[r.acc1.std for r in rows], fmt="o-", capsize=4,
                label="mean acc@1 ± std over seeds")
    ax.plot(x, [r.acc1.max for r in rows], "^", alpha=0.6, label="best seed")
    for i, r in enumerate(rows):
        if i and not r.significant:
            ax.annotate("n.s.", (i, r.acc1.mean), textcoords="offset points", xytext=(0, 14), ha="center",
                        fontsize=8)
    ax.set_xticks(list(x), [r.title for r in rows], rotation=30, ha="right")
    ax.set_ylabel("test acc@1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
