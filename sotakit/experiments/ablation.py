"""The stacked-improvements ablation: expand a ladder to recipe files, run (step, seed), tabulate.

Follows the TorchVision blog's method and pycls's sweep layout: every run is expanded to a file
before anything starts (setup), runs append one JSON line each to ``results.jsonl`` (launch), and the
table and plot are made from that file alone (collect, analyze), so an interrupted ablation
resumes by re-running the same command: finished (recipe hash, seed) pairs are skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..recipes import Recipe, dump_recipe, load_ladder, load_recipe, make_recipe
from .stats import format_table, ladder_table

DEFAULT_LONG_FACTOR = 600 / 90  # the blog's long-training step: 90 -> 600 epochs


def budget(recipe: Recipe, *, epochs: int, long: bool, long_factor: float = DEFAULT_LONG_FACTOR) -> Recipe:
    """The step's recipe at a short-cycle budget: ``epochs`` (times ``long_factor`` from the long step on).

    Epoch-denominated knobs (warm-up, StepLR step) keep their share of the run.
    """
    target = max(1, round(epochs * long_factor)) if long else epochs
    scale = target / recipe.epochs
    warmup = min(round(recipe.lr_warmup_epochs * scale), target - 1)
    step = {"lr_step_size": max(1, round(recipe.lr_step_size * scale))} if recipe.lr_scheduler == "steplr" else {}
    return make_recipe(recipe, epochs=target, lr_warmup_epochs=max(0, warmup), **step)


def recipe_hash(recipe: Recipe) -> str:
    """Identifies a configuration independent of seed and naming."""
    d = recipe.to_dict()
    for k in ("seed", "run_name", "output_dir", "recipe_name", "resume"):
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


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
        path.write_text(dump_recipe(r, {"title": step.title, "step": step.name}))
        out.append((step.name, step.title, path))
    return out


def read_results(results: Path) -> list[dict]:
    """The records of results.jsonl; a line torn by a kill mid-write is skipped (its run reruns)."""
    if not results.exists():
        return []
    out = []
    for line in results.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def append_line(path: Path, text: str) -> None:
    """Append a line, first closing a line torn by an earlier kill so the two do not merge."""
    with open(path, "ab+") as f:
        f.seek(0, os.SEEK_END)
        torn = f.tell() > 0 and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n"
        f.write((b"\n" if torn else b"") + text.encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())


def finished(results: Path) -> set[tuple[str, int]]:
    return {(r["recipe_hash"], r["seed"]) for r in read_results(results)}


def run_one(path: Path, seed: int, out_dir: Path, threads: int) -> dict:
    """Train one (step, seed) in its own process with ``threads`` intra-op threads; return its result."""
    recipe = load_recipe(path)
    name = f"{path.stem}-s{seed}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "sotakit", "train", "--config", str(path), "--seed", str(seed),
           "--output-dir", str(out_dir), "--run-name", name]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    run_dir = Path(proc.stdout.split("run directory: ")[1].splitlines()[0].strip())
    s = json.loads((run_dir / "summary.json").read_text())
    return {"step": path.stem, "seed": seed, "recipe_hash": recipe_hash(recipe), "run_dir": str(run_dir),
            "acc1": s["test"]["acc1"], "acc5": s["test"]["acc5"],
            "ema_acc1": s.get("test_ema", {}).get("acc1"), "ema_acc5": s.get("test_ema", {}).get("acc5"),
            "wall_time_s": time.time() - t0, "img_s": s["median_img_s"], "environment": s["environment"]}


def run_ablation(steps: list[tuple[str, str, Path]], out_dir: Path, *, seeds: int, jobs: int = 1,
                 say=print) -> list[dict]:
    """Run every (step, seed) not yet in results.jsonl, ``jobs`` at a time; return all results."""
    results = out_dir / "results.jsonl"
    done = finished(results)
    todo = [(path, seed) for _, _, path in steps for seed in range(seeds)
            if (recipe_hash(load_recipe(path)), seed) not in done]
    say(f"{len(todo)} runs to do, {len(steps) * seeds - len(todo)} already finished")
    threads = max(1, (os.cpu_count() or 1) // jobs)  # the machine's cores divided between the jobs

    failures, lock = [], threading.Lock()

    def one(job):
        try:
            rec = run_one(*job, out_dir=out_dir, threads=threads)
        except Exception as e:  # one failed run must not stop the others; it is reported at the end
            failures.append(f"{job[0].stem} seed {job[1]}: {e}")
            return None
        with lock:  # one line per finished run: an interruption loses no result
            append_line(results, json.dumps(rec))
        say(f"{rec['step']} seed {rec['seed']}: acc@1 {rec['acc1']:.2f} ({rec['wall_time_s']:.0f}s)")
        return rec

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(one, todo))
    if failures:
        raise RuntimeError(f"{len(failures)} run(s) failed; re-run the same command to retry only them:\n"
                           + "\n".join(failures))
    return read_results(results)


def write_report(steps: list[tuple[str, str, Path]], out_dir: Path) -> str:
    """ablation.md, ablation.csv and ablation.png from results.jsonl; returns the Markdown table."""
    # Only results of these exact step recipes: a directory reused with other overrides is not pooled.
    wanted = {recipe_hash(load_recipe(path)) for _, _, path in steps}
    recs = [r for r in read_results(out_dir / "results.jsonl") if r["recipe_hash"] in wanted]
    acc1, acc5 = {}, {}
    for r in recs:
        # With an EMA in the recipe the EMA model is the one reported, as the blog's EMA step does.
        ema = r.get("ema_acc1") is not None
        acc1.setdefault(r["step"], []).append(r["ema_acc1"] if ema else r["acc1"])
        acc5.setdefault(r["step"], []).append(r["ema_acc5"] if ema else r["acc5"])
    rows = ladder_table([(n, t) for n, t, _ in steps], acc1, acc5)
    table = format_table(rows)
    (out_dir / "ablation.md").write_text(table + "\n")
    csv = ["step,n,acc1_mean,acc1_std,acc1_median,acc1_max,acc5_mean,acc5_std,incremental,absolute,p_value"]
    csv += [f"{r.step},{r.acc1.n},{r.acc1.mean:.4f},{r.acc1.std:.4f},{r.acc1.median:.4f},{r.acc1.max:.4f},"
            f"{r.acc5.mean:.4f},{r.acc5.std:.4f},{r.incremental:.4f},{r.absolute:.4f},{r.p_value:.6g}" for r in rows]
    (out_dir / "ablation.csv").write_text("\n".join(csv) + "\n")
    _plot(rows, out_dir / "ablation.png")
    return table


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
            ax.annotate("n.s.", (i, r.acc1.mean), textcoords="offset points", xytext=(0, 14), ha="center", fontsize=8)
    ax.set_xticks(list(x), [r.title for r in rows], rotation=30, ha="right")
    ax.set_ylabel("test acc@1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
