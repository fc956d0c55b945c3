"""What the `sotakit` command prints: plain functions from results to text or rich tables.

The cli layer (imported by cli.py only). Nothing here reads files, trains or parses arguments, so
every table, summary and verdict is checked by a test that hands in a dict and reads the text back.
Strings are printed as they are; rich renderables go through a rich Console. Values that come
from users (run names, recipe values) are escaped, so a ``[`` in them is never taken for markup.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from .experiments.stats import mean_std
from .recipes import Recipe, dump_recipe

if TYPE_CHECKING:
    from .evaluate.resize import ResizeTuning
    from .experiments.family import FamilyRow
    from .experiments.runner import Entry
    from .experiments.sweep import SweepRow

def acc_line(label: str, m: dict) -> str:
    """``label acc@1 x  acc@5 y  (n images)``; acc@5 left out when not reported (5 classes or fewer)."""
    acc5 = f"  acc@5 {m['acc5']:.2f}" if m.get("acc5") is not None else ""
    return f"{label} acc@1 {m['acc1']:.2f}{acc5}  ({m['n']} images)"


def calibration_suffix(m: dict) -> str:
    """``  ECE x%  NLL y  Brier z`` when the metrics hold them (evaluation does since issue 13)."""
    if m.get("ece") is None:
        return ""
    return f"  ECE {m['ece']:.2f}%  NLL {m['nll']:.4f}  Brier {m['brier']:.4f}"


def _num(v, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def summary_text(s: dict) -> str:
    """After `sotakit train`: the run directory, accuracy per split, timing, skipped files."""
    lines = [f"run directory: {s['run_dir']}"]
    for split in ("holdout", "holdout_ema", "test", "test_ema", "test_tta", "test_ema_tta"):
        if split in s:
            m = s[split]
            lines.append(acc_line(f"{split:12s}", m))
    if s.get("median_img_s"):
        lines.append(f"train time {s['train_time_s']:.0f}s, wall time {s['wall_time_s']:.0f}s, "
                     f"median {s['median_img_s']:.0f} img/s")
    if s.get("skipped_files"):
        lines.append(f"skipped files: {s['skipped_files']} (listed with the reason in data_report.csv)")
    return "\n".join(lines)


def eval_text(out: dict) -> str:
    """`sotakit eval` and `train --test-only`: what was evaluated, then plain and EMA model."""
    lines = [f"{out['checkpoint']} (epoch {out['epoch']}) on {out['data']} test split "
             f"(resize {out['val_resize_size']}, crop {out['val_crop_size']}):"]
    for key, label in (("test", "model"), ("test_ema", "EMA model"), ("test_tta", "model+TTA"),
                       ("test_ema_tta", "EMA+TTA")):
        if key in out:
            m = out[key]
            line = acc_line(f"{label:10s}", m) + calibration_suffix(m)
            lines.append(f"  {line}")
    return "\n".join(lines)


def color_stats_text(stats, name: str, *, cached: bool = False) -> str:
    """`sotakit data stats`: mean and std per channel, then the covariance's eigenpairs (PCA lighting)."""
    fmt = lambda v: "(" + ", ".join(f"{x:.4f}" for x in v) + ")"  # noqa: E731
    lines = [f"{name}: {stats.images} training images, {stats.pixels} pixels (RGB, [0, 1])"
             + (" [cached]" if cached else ""),
             f"  mean {fmt(stats.mean)}", f"  std  {fmt(stats.std)}",
             "  covariance eigenvalues, eigenvectors:"]
    lines += [f"    {v:.6f}  {fmt(vec)}" for v, vec in zip(stats.eigenvalues, stats.eigenvectors)]
    lines.append(f"  use them: --normalize data (fingerprint {stats.fingerprint[:12]})")
    return "\n".join(lines)


def interpret_text(doc: dict) -> str:
    """`sotakit interpret`: accuracy, the most confused pairs, the highest losses, the files written."""
    lines = [f"{doc['model']} on {doc['images']} test images: acc@1 {doc['acc1']:.2f}", "most confused "
             "(true -> predicted: images):"]
    lines += [f"  {t} -> {p}: {n}" for t, p, n in doc["most_confused"][:10]] or ["  none"]
    lines.append("highest losses (predicted / true, loss, probability):")
    lines += [f"  #{t['index']}: {t['predicted']} / {t['true']}, {t['loss']:.2f}, {t['probability']:.2f}"
              for t in doc["top_losses"]]
    lines.append(f"wrote confusion.png, top_losses.png, interpret.json in {doc['out']}")
    return "\n".join(lines)


def presets_text(presets: list[tuple[str, dict]]) -> str:
    """`sotakit recipes`: one line per preset, name and title."""
    return "\n".join(f"{name:28s} {meta.get('title', '')}" for name, meta in presets)


def preset_text(recipe: Recipe, meta: dict, *, data: str | None = None, notes: list[str] = ()) -> str:
    """`sotakit recipes show`: the preset as a recipe file, with what resolving it for ``data`` changed."""
    meta = dict(meta)
    if notes:
        meta["resolved_for"] = f"{data}: " + "; ".join(notes)
    return dump_recipe(recipe, meta)


def models_table(rows: list[dict], *, size: int, small: bool, published: dict | None = None) -> Table:
    """`sotakit models`: parameters and FLOPs per model (rows of ``describe_models``); RegNets add their
    stages, and ``published`` (name -> (paper top-1, reproduced top-1, settings)) the seed's results."""
    table = Table(title=f"models at {size}px" + (" (small-image stem)" if small else ""))
    stages = any(r.get("stages") for r in rows)
    cols = ["model", "params (M)", "GFLOPs"]
    cols += ["depth", "stage widths", "stage depths", "group w"] if stages else []
    cols += ["paper top-1", "Keras top-1", "diff", "Keras settings"] if published else []
    for col in [*cols, "note"]:
        table.add_column(col, justify="right" if col in ("params (M)", "GFLOPs", "depth", "paper top-1",
                                                         "Keras top-1", "diff") else "left")
    for r in rows:
        flops = r.get("flops")
        cells = [r["name"], f"{r['params'] / 1e6:.2f}" if r.get("params") is not None else "-",
                 f"{flops / 1e9:.3f}" if flops else "-"]
        if stages:
            st = r.get("stages")
            cells += ([str(st["depth"]), *(",".join(map(str, st[k])) for k in ("widths", "depths",
                                                                               "group_widths"))]
                      if st else ["-"] * 4)
        if published:
            paper, ours, how = published.get(r["name"], (None, None, ""))
            cells += [_num(paper, ".1f"), _num(ours), _num(paper - ours if paper else None), how]
        note = "; ".join(x for x in (r.get("note"), r.get("error")) if x)
        table.add_row(*cells, escape(note))
    return table


def family_table(rows: list[FamilyRow], out: Path) -> Table:
    """After a model family's runs: one row per model by FLOPs, accuracy over seeds, time and speed."""
    crops = "/".join(str(c) for c in sorted({r.crop for r in rows}))
    t = Table(title=f"{out.name}: test acc@1/acc@5 over seeds (EMA model when kept); GFLOPs at {crops} px")
    for col in ("model", "params (M)", "GFLOPs", "n", "acc@1 mean ± std", "acc@5 mean ± std",
                "train time (s)", "img/s"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        t.add_row(r.model, f"{r.params / 1e6:.2f}", f"{r.flops / 1e9:.3f}", str(r.acc1.n), mean_std(r.acc1),
                  mean_std(r.acc5) if r.acc5.n else "-", _num(r.train_time_s, ".0f"), _num(r.img_s, ".0f"))
    return t


def plan_text(entries: list[Entry], *, runs: int, seeds: int, label: str, dry_run: bool) -> str:
    """Before an ablation or sweep: how many runs, where the recipe files are (listed on a dry run)."""
    folds = " x folds" if runs != len(entries) * seeds else ""
    where = entries[0][2].parent
    lines = [f"{len(entries)} {label} x {seeds} seeds{folds} = {runs} runs; recipes in {where}"]
    if dry_run:
        lines += [f"  {title:28s} {path}" for _, title, path in entries]
    return "\n".join(lines)


def estimate_text(total_s: float, per_image: dict[tuple, float], startup_s: float, *, jobs: int,
                  runs: int | None = None) -> str:
    """The time estimate of the runs still to do (``runs``), with what was measured and what it leaves out."""
    from .experiments.estimate import format_duration  # imports torch: only for a dry run's estimate
    lines = [f"  measured {model} {size}px batch {batch}: {1 / sec:.0f} train img/s"
             for (model, size, batch), sec in per_image.items()]
    lines.append(f"  measured start-up per run (import + data load): {startup_s:.1f}s")
    lines.append(f"estimated total: ~{format_duration(total_s)} with --jobs {jobs} (rough: measured over "
                 "8 steps after 2 warm-up steps, eval counted at 1/3 of a training image, jobs assumed to "
                 "share the cores perfectly, other load on the machine not known)"
                 + (f" for the {runs} runs still to do" if runs is not None else ""))
    return "\n".join(lines)


def ladder_text(tables: str, out: Path) -> str:
    """After `sotakit ablate`: the ladder table(s) and the files written."""
    return f"{tables}\nwritten: {out / 'ablation.md'}, {out / 'ablation.csv'}, {out / 'ablation.png'}"


def sweep_table(rows: list[SweepRow], grid: dict[str, list], *, title: str) -> Table:
    """The sweep's points, best first, for the terminal."""
    t = Table(title=title)
    for col in [*grid, "n", "acc@1 mean ± std", "median", "max", "acc@5 mean ± std"]:
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(*[escape(str(v)) for v in r.point.values()], str(r.acc1.n),
                  mean_std(r.acc1), f"{r.acc1.median:.2f}", f"{r.acc1.max:.2f}", mean_std(r.acc5))
    return t


def sweep_view(rows: list[SweepRow], grid: dict[str, list], folds: str | None, out: Path) -> list:
    """After `sotakit sweep`: the sorted table, the per-fold table (K-fold) and the files written."""
    what = "validation-fold acc@1 over folds x seeds" if folds else "test acc@1 over seeds"
    view: list = [sweep_table(rows, grid, title=f"sweep {' x '.join(grid)}: {what}, best first")]
    if folds:
        view.append("per fold (validation acc@1, mean over seeds; the test split reported apart, "
                    f"never used to choose):\n{folds}")
    plot = (f", {out / 'sweep.png'}" if len(grid) <= 2 else
            f" (no plot: {len(grid)} knobs; plots are drawn for one knob (line) or two (heat map))")
    view.append(f"written: {out / 'sweep.md'}, {out / 'sweep.csv'}{plot}")
    return view


def resize_tuning_view(res: ResizeTuning, split: str, run_dir: str | Path) -> list:
    """After `sotakit tune-resize`: accuracy per resize on both halves, then the verdict."""
    t = Table(title=f"eval resize (crop {res.crop_size} fixed) on two seeded halves of the {split} split")
    for col in ("val_resize_size", f"half A acc@1 (choose, n={res.n_a})",
                f"half B acc@1 (confirm, n={res.n_b})", ""):
        t.add_column(col, justify="right")
    for size, a, b in zip(res.sizes, res.acc_a, res.acc_b, strict=True):
        mark = " ".join(x for x, on in (("chosen", size == res.chosen), ("(was)", size == res.current)) if on)
        t.add_row(str(size), f"{a:.2f}", f"{b:.2f}", mark)
    return [t, resize_verdict(res, run_dir)]


def resize_verdict(res: ResizeTuning, run_dir: str | Path) -> str:
    """One sentence: which val_resize_size the run keeps, and on what evidence."""
    if res.chosen == res.current:
        return (f"val_resize_size {res.current} stays: no size did better on half A. "
                "Recorded in tune_resize.json.")
    b_chosen, b_current = res.acc_b[res.sizes.index(res.chosen)], res.acc_b[res.sizes.index(res.current)]
    if res.confirmed:
        return (f"val_resize_size {res.chosen} (was {res.current}): chosen on half A, confirmed on half B "
                f"({b_chosen:.2f} vs {b_current:.2f}). Stored in {run_dir}/recipe.toml; "
                "`sotakit eval` uses it.")
    return (f"val_resize_size {res.current} stays: {res.chosen} was best on half A but not confirmed on "
            f"half B ({b_chosen:.2f} vs {b_current:.2f}). Recorded in tune_resize.json.")


STATUS_STYLE = {"finished": "green", "running": "cyan", "interrupted": "yellow", "failed": "red"}


def runs_table(infos: list[dict], *, root: str | Path | None) -> Table:
    """`sotakit runs`: one row per run (rows of ``experiments.runs.run_info``)."""
    table = Table(title=f"{len(infos)} runs in {escape(str(root or 'runs'))}",
                  caption="acc@1: test split of finished runs; last epoch's validation otherwise")
    left = ("run", "recipe", "model", "data", "status")
    for col in (*left[:4], "seed", "epochs", "acc@1", "EMA acc@1", "wall time", "img/s", "status"):
        table.add_column(col, justify="left" if col in left else "right")
    for r in infos:
        names = (r["name"], r["recipe"] or "-", r["model"], r["data"], r["seed"])
        table.add_row(*(escape(str(x)) for x in names),
                      f"{r['epochs_done']}/{r['epochs']}", _num(r["acc1"]), _num(r["ema_acc1"]),
                      "-" if r["wall_time_s"] is None else f"{r['wall_time_s']:.0f}s",
                      _num(r["img_s"], ".0f"),
                      f"[{STATUS_STYLE[r['status']]}]{r['status']}[/]")
    return table


def compare_tables(name_a: str, name_b: str, recipe_diff: list[tuple], metrics: list[tuple], *,
                   unfinished: bool = False) -> list[Table]:
    """`sotakit runs compare`: the recipe fields that differ, then the metrics with B - A, then a
    warning when the runs were not tested on the same images (data, its fingerprint or --test-limit).

    ``recipe_diff`` and ``metrics`` are what ``experiments.runs.compare_runs`` returns.
    """
    names = escape(f"A = {name_a}, B = {name_b}")
    rt = Table(title=f"recipe difference ({len(recipe_diff)} fields)", caption=names)
    for col in ("field", "A", "B"):
        rt.add_column(col)
    for k, a, b in recipe_diff:
        rt.add_row(k, escape(repr(a)), escape(repr(b)))
    note = "; unfinished runs show the last epoch's validation" if unfinished else ""
    mt = Table(title="metric difference", caption=names + note)
    for col in ("metric", "A", "B", "B - A"):
        mt.add_column(col, justify="left" if col == "metric" else "right")
    for label, a, b, d in metrics:
        mt.add_row(label, _num(a), _num(b), "-" if d is None else f"{d:+.2f}")
    from .experiments.runs import TEST_SET_FIELDS  # runs.py imports torch: only when comparing
    differ = [f"{k} {a!r} vs {b!r}" for k, a, b in recipe_diff if k in TEST_SET_FIELDS]
    if not differ:
        return [rt, mt]
    return [rt, mt, f"warning: A and B were not tested on the same images ({'; '.join(differ)}): their "
                    "accuracies are not directly comparable"]


def report_text(path: Path) -> str:
    return f"report written: {path}"


# --- weights, prediction, calibration, export (issue 13) ---

def _metrics_line(meta: dict) -> str:
    """``data split acc@1 x (n images)`` of each entry of a weights file's ``_metrics``."""
    parts = [f"{data} {split} acc@1 {m['acc@1']:.2f} ({m['n']} images)"
             for data, splits in meta["_metrics"].items() for split, m in splits.items()]
    return "; ".join(parts) or "no metrics (the run has no summary.json)"


def weights_text(path, meta: dict) -> str:
    """`sotakit export-weights`: the file, what is in it and why that model."""
    p = meta["preprocessing"]
    temperature = f", temperature {meta['temperature']:.3f}" if meta.get("temperature") else ""
    return "\n".join([
        f"weights: {path} ({meta['_file_size']:.3f} MiB, sha256 {meta['tensors_sha256'][:16]}...)",
        f"  {meta['arch']} {meta['builder_args']}, {meta['num_params']:,} parameters, "
        f"{meta['_ops']:g} GFLOPs at {p['crop_size']} px, {len(meta['categories'])} categories{temperature}",
        f"  model: {meta['model_choice']['model']} ({meta['model_choice']['reason']})",
        f"  {_metrics_line(meta)}",
        f"  preprocessing: resize {p['resize_size']}, crop {p['crop_size']}, {p['interpolation']}, "
        f"mean {p['mean']}, std {p['std']}, {p['channels']} channel{'s' if p['channels'] > 1 else ''}"])


def weights_table(rows: list[tuple[str, Path, dict]], *, folder: Path) -> Table:
    """`sotakit weights list`: name, architecture, classes, test acc@1 and file of each registered weights."""
    table = Table(title=f"weights in {escape(str(folder))}" + ("" if rows else " (none: `sotakit weights add "
                                                              "NAME FILE`)"))
    for col in ("name", "arch", "classes", "metrics", "MiB", "file"):
        table.add_column(col, justify="right" if col in ("classes", "MiB") else "left")
    for name, path, meta in rows:
        table.add_row(escape(name), meta["arch"], str(len(meta["categories"])), escape(_metrics_line(meta)),
                      f"{meta['_file_size']:.3f}", escape(str(path)))
    return table


def _top_text(r) -> str:
    return ", ".join(f"{c} {100 * p:.1f}%" for c, p in r.top)


def predictions_table(results: list) -> Table:
    """`sotakit predict --format table`: each file with its top-k classes, skipped ones with the reason."""
    table = Table(title="predictions")
    for col in ("file", "class", "probability", "top-k"):
        table.add_column(col, justify="right" if col == "probability" else "left")
    for r in results:
        if r.error:
            table.add_row(escape(r.file), "[red]skipped[/red]", "", escape(r.error))
        else:
            table.add_row(escape(r.file), escape(r.top[0][0]), f"{100 * r.top[0][1]:.2f}%",
                          escape(_top_text(r)))
    return table


def predictions_plain(results: list) -> str:
    """The table format written to a file: one line per input, tab-separated."""
    return "".join(f"{r.file}\t{'skipped: ' + r.error if r.error else _top_text(r)}\n" for r in results)


def predictions_json(results: list) -> str:
    import json
    return json.dumps({"predictions": [{"file": r.file,
                                        "top": [{"class": c, "probability": p} for c, p in r.top]}
                                       for r in results if not r.error],
                       "skipped": [{"file": r.file, "reason": r.error} for r in results if r.error]},
                      indent=2) + "\n"


def predictions_csv(results: list) -> str:
    """One row per (file, rank); a skipped file has one row with its reason and no class."""
    import csv
    import io
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "rank", "class", "probability", "skipped"])
    for r in results:
        if r.error:
            w.writerow([r.file, "", "", "", r.error])
        for rank, (c, p) in enumerate(r.top, 1):
            w.writerow([r.file, rank, c, f"{p:.6f}", ""])
    return buf.getvalue()


def skipped_text(skipped: list) -> str:
    return "; ".join(f"{r.file} ({r.error})" for r in skipped)


def calibration_text(res: dict, run_dir) -> str:
    """`sotakit calibrate`: the temperature and ECE/NLL/Brier before and after, holdout and test."""
    lines = [f"{run_dir}: temperature {res['temperature']:.4f} fitted on the holdout split "
             f"({res['holdout_n']} images) for the {res['model']} model"]
    for split in ("holdout", "test"):
        b, a = res[f"{split}_before"], res[f"{split}_after"]
        lines.append(f"  {split:8s} ECE {b['ece']:.2f}% -> {a['ece']:.2f}%  "
                     f"NLL {b['nll']:.4f} -> {a['nll']:.4f}  Brier {b['brier']:.4f} -> {a['brier']:.4f}")
    lines.append("  stored in the weights file's meta (temperature); `sotakit predict` applies it")
    return "\n".join(lines)


def export_text(res: dict) -> str:
    return (f"exported {res['path']} ({res['format']}); max abs difference of the logits vs PyTorch on a "
            f"3-image batch: {res['max_abs_diff']:.3g}")
