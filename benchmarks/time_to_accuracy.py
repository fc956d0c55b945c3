"""Time to accuracy on Fashion-MNIST: the shipped presets against their targets, a run per seed.

Run by hand (the machine should be otherwise idle; each run is timed):

    .venv/bin/python benchmarks/time_to_accuracy.py [--presets fashion-mnist-10min fashion-mnist-30min]
                                                    [--seeds 0 1 2] [--out runs-tta]

Each (preset, seed) is one ``sotakit train --recipe P --seed S --tta flip`` on the full 60,000-image
training set, evaluated on the 10,000 test images. The plain test acc@1 is what the target counts; the
flip-TTA figure (fastai's ``tta``, run after training) is reported apart. The time is the run's
``train_time_s`` (training steps, per-epoch evaluation excluded), beside its whole wall time.

Resumable: every finished run is a row of benchmarks/results/time-to-accuracy-<machine>-torch<v>.json,
and a (preset, seed) already there is not run again, so the 3 x 30 minutes can span sessions. The
Markdown table beside it is rewritten after every run.

``--adopt PRESET=RUN_DIR`` takes a finished run trained with other flags (the run that chose the preset)
as that preset's row for its seed, only if it trained the same recipe: every field equal to what
``--recipe PRESET --seed S`` gives, apart from names, logging and what the machine decides (device,
probe choices; those are in the row). Its flip-TTA figure comes from ``sotakit eval --tta flip``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from sotakit.experiments.bench import machine_tag
from sotakit.recipes.presets import load_preset, load_recipe, preset_meta
from sotakit.recipes.recipe import OPERATIONAL_FIELDS, recipe_hash
from sotakit.train.machine import cpu_name

# Issue 14's targets: (test acc@1 of the mean of 3 seeds, seconds of training).
TARGETS = {"fashion-mnist-10min": (94.5, 600.0), "fashion-mnist-30min": (95.0, 1800.0)}
RESULTS = Path(__file__).parent / "results"
# Fields a run may differ in from its preset and still have trained the same recipe: its names, its
# logging and output, and what the machine decided (device fallback, the probe's precision and format).
NOT_THE_RECIPE = {"run_name", "recipe_name", "output_dir", "print_freq", "tta", "tta_beta", "device", "amp",
                  "channels_last", "machine_probe", "data_root"}


def preset_hash(preset: str) -> str:
    """The preset's recipe, seed and names aside: a row counts for the preset only while this matches, so
    a preset retuned later (more epochs) is measured again instead of mixing with the old rows."""
    recipe = load_preset(preset).replace(seed=0)
    return recipe_hash(recipe, ignore=set(OPERATIONAL_FIELDS) | NOT_THE_RECIPE)


def results_path(ext: str) -> Path:
    return RESULTS / f"time-to-accuracy-{machine_tag()}-torch{torch.__version__.split('+')[0]}.{ext}"


def load_rows() -> list[dict]:
    path = results_path("json")
    return json.loads(path.read_text())["runs"] if path.is_file() else []


def save_rows(rows: list[dict]) -> None:
    path = results_path("json")
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"machine": f"{platform.machine()} {cpu_name()}, {torch.get_num_threads()} "
                                          f"threads", "runs": rows}, indent=1) + "\n")
    tmp.replace(path)


def train_one(preset: str, seed: int, out: Path) -> dict:
    """One timed ``sotakit train``; returns the row for the results file."""
    name = f"{preset}-s{seed}"
    cmd = [sys.executable, "-m", "sotakit", "train", "--recipe", preset, "--seed", str(seed),
           "--run-name", name, "--output-dir", str(out), "--tta", "flip", "--print-freq", "100"]
    print("$", " ".join(cmd[1:]), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    process_s = time.perf_counter() - t0
    return row(preset, sorted((out / "runs").glob(f"*-{name}"))[-1], process_s=round(process_s, 1),
               recipe_hash=preset_hash(preset))


def row(preset: str, run_dir: Path, **extra) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    recipe = load_recipe(run_dir / "recipe.toml")
    return {"preset": preset, "seed": s["seed"], "epochs": s["epochs"], "acc1": s["test"]["acc1"],
            "acc1_tta_flip": (s.get("test_tta") or {}).get("acc1"),
            "train_time_s": round(s["train_time_s"], 1),
            "wall_time_s": round(s["wall_time_s"], 1), "median_img_s": round(s["median_img_s"]),
            "amp": recipe.amp, "channels_last": recipe.channels_last,
            "git_commit": s["environment"].get("git_commit"), "torch": s["environment"]["torch"],
            "date": time.strftime("%Y-%m-%d", time.localtime((run_dir / "summary.json").stat().st_mtime)),
            "run_dir": str(run_dir), **extra}


def adopt(preset: str, run_dir: Path) -> dict:
    """A finished run as ``preset``'s row for its seed, if it trained the preset's recipe (see above)."""
    ran = load_recipe(run_dir / "recipe.toml")
    want = load_preset(preset).replace(seed=ran.seed)
    differ = [f"{k}: {getattr(ran, k)!r} (preset: {getattr(want, k)!r})" for k in want.to_dict()
              if k not in NOT_THE_RECIPE and getattr(ran, k) != getattr(want, k)]
    if differ:
        sys.exit(f"{run_dir} did not train {preset}: " + "; ".join(differ))
    r = row(preset, run_dir, adopted=True, recipe_hash=preset_hash(preset))
    if r["acc1_tta_flip"] is None:
        cmd = [sys.executable, "-m", "sotakit", "eval", str(run_dir), "--tta", "flip", "--json"]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r["acc1_tta_flip"] = json.loads(out)["test_tta"]["acc1"]
    return r


def table(rows: list[dict]) -> list[str]:
    lines = [f"# Time to accuracy on Fashion-MNIST ({machine_tag()})", "",
             f"Machine: {platform.machine()} {cpu_name()}, {torch.get_num_threads()} threads; torch "
             f"{torch.__version__}. Command: `.venv/bin/python benchmarks/time_to_accuracy.py`. Test acc@1 "
             "on the 10,000 test images, no TTA (flip TTA apart); training time excludes the per-epoch "
             "evaluation.", "",
             "| preset | seed | epochs | test acc@1 | flip TTA | training s | wall s | img/s | bf16 | run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tta = f"{r['acc1_tta_flip']:.2f}" if r["acc1_tta_flip"] is not None else "-"
        lines.append(f"| {r['preset']} | {r['seed']} | {r['epochs']} | {r['acc1']:.2f} | {tta} | "
                     f"{r['train_time_s']:.0f} | {r['wall_time_s']:.0f} | {r['median_img_s']} | "
                     f"{'yes' if r['amp'] else 'no'} | "
                     f"{'adopted: ' if r.get('adopted') else ''}{Path(r['run_dir']).name} |")
    lines += ["", "| preset | n | mean test acc@1 (min-max) | mean flip TTA | median training s (max) "
                  "| target |", "|---|---|---|---|---|---|"]
    for preset, key in dict.fromkeys((r["preset"], r["recipe_hash"]) for r in rows):
        rs = [r for r in rows if (r["preset"], r["recipe_hash"]) == (preset, key)]
        accs, times = [r["acc1"] for r in rs], [r["train_time_s"] for r in rs]
        ttas = [r["acc1_tta_flip"] for r in rs if r["acc1_tta_flip"] is not None]
        acc_t, time_t = TARGETS.get(preset, (None, None))
        verdict = "-"
        if key != preset_hash(preset):
            acc_t, preset = None, f"{preset} (an earlier recipe, {key})"
        if acc_t is not None:
            met = statistics.mean(accs) >= acc_t and max(times) <= time_t
            target = f"{acc_t}% in {time_t / 60:.0f} min"
            verdict = (f"{target}: {'met' if met else 'not met'}" if len(rs) >= 3 else
                       f"{target}: undecided, n = {len(rs)} of 3 ({'above' if met else 'below'} so far)")
        tta = f"{statistics.mean(ttas):.2f}" if ttas else "-"
        lines.append(f"| {preset} | {len(rs)} | {statistics.mean(accs):.2f} "
                     f"({min(accs):.2f}-{max(accs):.2f}) "
                     f"| {tta} | {statistics.median(times):.0f} ({max(times):.0f}) | {verdict} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["fashion-mnist-10min", "fashion-mnist-30min"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("runs-tta"), help="where the run folders go")
    ap.add_argument("--adopt", action="append", default=[], metavar="PRESET=RUN_DIR",
                    help="a finished run of the preset's recipe (other flags) as the row of its seed")
    args = ap.parse_args()
    for preset in args.presets:
        load_preset(preset), preset_meta(preset)  # a typo fails here, before an hour of training
    rows = load_rows()
    for item in args.adopt:
        preset, _, run_dir = item.partition("=")
        r = adopt(preset, Path(run_dir))
        rows = [x for x in rows if (x["preset"], x["seed"], x["recipe_hash"])
                != (preset, r["seed"], r["recipe_hash"])] + [r]
        save_rows(rows)
    for preset in args.presets:
        for seed in args.seeds:
            if any((r["preset"], r["seed"], r["recipe_hash"]) == (preset, seed, preset_hash(preset))
                   for r in rows):
                continue
            rows.append(train_one(preset, seed, args.out))
            save_rows(rows)
            results_path("md").write_text("\n".join(table(rows)) + "\n")
    results_path("md").write_text("\n".join(table(rows)) + "\n")
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main()
