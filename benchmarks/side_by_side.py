"""Issue 14's side-by-side: `sotakit train` against TorchVision's and timm's reference train.py.

Same folder (6,000 real Fashion-MNIST train images upscaled to 72 px as PNG, 1,000 val images), same
model (resnet18, ImageNet stem), batch 128, train/val crop 32, one epoch, ``-j 2``, and the TorchVision
v2 flags (TrivialAugment, random erasing 0.1, mixup 0.2 / cutmix 1.0, label smoothing 0.1, EMA, RA
sampler, no warm-up). timm gets its nearest flags (RandAugment ``rand-m9-mstd0.5`` for TrivialAugment,
bf16 autocast and channels-last; ``--opt momentum``, its plain SGD, since its ``sgd`` is Nesterov) and
is compared with ``sotakit train ... --amp --channels-last``.
Both learning rates are the v2 recipe's 0.5 at batch 1024 scaled to 128 (0.0625), which the
``torchvision-v2`` preset does itself (``lr_ref_batch``). The figure is the whole process's wall time
(start-up, folder scan, training, evaluation, checkpoints), alternated A B A B over ``--pairs`` pairs;
reported: the median of the pair ratios (reference time / sotakit time, > 1: sotakit is faster),
min-max and n. Run by hand on a quiet machine:

    .venv/bin/python benchmarks/side_by_side.py --vision-refs DIR --timm-train FILE [--pairs 4] [--warmup 1]
    .venv/bin/python benchmarks/side_by_side.py ... --smoke   # each command once, no results file

The reference scripts are not vendored: ``--vision-refs`` (or $VISION_REFERENCES) is a folder holding
TorchVision's references/classification/{train,utils,presets,sampler,transforms}.py, ``--timm-train``
(or $TIMM_TRAIN) timm's train.py (timm itself: ``pip install timm``). ``how_to_get`` says how to get them.
Writes benchmarks/results/side-by-side-<machine>-torch<version>.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from sotakit.experiments.bench import machine_line, machine_tag

VISION_FILES = ("train.py", "utils.py", "presets.py", "sampler.py", "transforms.py")
TRAIN_PER_CLASS, VAL_PER_CLASS, SIZE = 600, 100, 72


def how_to_get() -> str:
    return ("TorchVision's references (not vendored; take them from its public repository):\n"
            "  git clone --depth 1 --filter=blob:none --sparse https://github.com/pytorch/vision\n"
            "  git -C vision sparse-checkout set references/classification\n"
            "  then --vision-refs vision/references/classification (or VISION_REFERENCES=...)\n"
            "timm's train.py: pip install timm, then the train.py of that version's tag (vX.Y.Z), e.g.\n"
            "  curl -LO https://raw.githubusercontent.com/huggingface/pytorch-image-models/v1.0.31/train.py\n"
            "  then --timm-train train.py (or TIMM_TRAIN=...)")


def make_folder(root: Path, *, train_per_class: int = TRAIN_PER_CLASS,
                val_per_class: int = VAL_PER_CLASS) -> None:
    """train/<class>/*.png and val/<class>/*.png: the first 600 train and 100 test images of each class,
    upscaled 28 -> 72 px (bicubic), saved as RGB PNG as a user's photo folder would hold them."""
    from sotakit.data import load_data
    bundle = load_data("fashion-mnist")
    tmp = root.with_name(root.name + ".part")  # a half-written folder is never taken for a finished one
    shutil.rmtree(tmp, ignore_errors=True)
    for split, per_class, source in (("train", train_per_class, bundle.train),
                                     ("val", val_per_class, bundle.test)):
        for label, name in enumerate(bundle.classes):
            folder = tmp / split / name.replace("/", "-")
            folder.mkdir(parents=True)
            picked = (source.targets == label).nonzero().flatten()[:per_class].tolist()
            for k, i in enumerate(picked):
                image = Image.fromarray(source.images[i][0].numpy()).convert("RGB")
                image.resize((SIZE, SIZE), Image.BICUBIC).save(folder / f"{k:04d}.png")
    tmp.rename(root)


def folder_ok(root: Path, *, train_per_class: int = TRAIN_PER_CLASS,
              val_per_class: int = VAL_PER_CLASS) -> bool:
    return all(len(list((root / split).glob("*/*.png"))) == n * 10
               for split, n in (("train", train_per_class), ("val", val_per_class)))


COMMON = dict(batch=128, crop=32, epochs=1, workers=2, lr=0.5 * 128 / 1024)


def vision_command(refs: Path, folder: Path, out: Path) -> list[str]:
    c = COMMON
    return [sys.executable, str(refs / "train.py"), "--data-path", str(folder), "--model", "resnet18",
            "--device", "cpu", "-b", str(c["batch"]), "--epochs", str(c["epochs"]), "-j", str(c["workers"]),
            "--opt", "sgd", "--lr", str(c["lr"]), "--lr-scheduler", "cosineannealinglr",
            "--lr-warmup-epochs", "0", "--auto-augment", "ta_wide", "--random-erase", "0.1",
            "--label-smoothing", "0.1", "--mixup-alpha", "0.2", "--cutmix-alpha", "1.0",
            "--weight-decay", "2e-05", "--norm-weight-decay", "0.0", "--model-ema", "--model-ema-steps", "32",
            "--model-ema-decay", "0.99998", "--ra-sampler", "--ra-reps", "4",
            "--train-crop-size", str(c["crop"]), "--val-crop-size", str(c["crop"]),
            "--val-resize-size", str(c["crop"]), "--output-dir", str(out)]


def timm_command(train_py: Path, folder: Path, out: Path) -> list[str]:
    c = COMMON
    return [sys.executable, str(train_py), "--data-dir", str(folder), "--train-split", "train",
            "--val-split", "val", "--model", "resnet18", "--num-classes", "10", "--device", "cpu",
            "-b", str(c["batch"]), "--epochs", str(c["epochs"]), "-j", str(c["workers"]),
            "--img-size", str(c["crop"]), "--opt", "momentum", "--lr", str(c["lr"]),
            "--weight-decay", "2e-05", "--sched", "cosine", "--warmup-epochs", "0",
            "--aa", "rand-m9-mstd0.5", "--reprob", "0.1",
            "--smoothing", "0.1", "--mixup", "0.2", "--cutmix", "1.0", "--model-ema",
            "--amp", "--amp-dtype", "bfloat16", "--channels-last", "--output", str(out)]


def sotakit_command(folder: Path, out: Path, *, amp: bool = False) -> list[str]:
    c = COMMON
    return ([sys.executable, "-m", "sotakit", "train", "--recipe", "torchvision-v2", "--data", str(folder),
             "--model", "resnet18", "--device", "cpu", "-b", str(c["batch"]), "--epochs", str(c["epochs"]),
             "-j", str(c["workers"]), "--lr-warmup-epochs", "0", "--train-crop-size", str(c["crop"]),
             "--val-crop-size", str(c["crop"]), "--val-resize-size", str(c["crop"]), "--output-dir", str(out)]
            + (["--amp", "--channels-last"] if amp else []))


def wall_time(command: list[str], out: Path, log: Path) -> float:
    """Seconds from process start to exit; the output goes to ``log``, a failure shows its tail."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with log.open("w") as f:
        t0 = time.perf_counter()
        rc = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, cwd=out).returncode
        elapsed = time.perf_counter() - t0
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"exit code {rc} from:\n  {' '.join(command)}\n--- last lines of {log} ---\n{tail}")
    return elapsed


def compare(name: str, reference: list[str], ours: list[str], *, pairs: int, work: Path,
            warmup: int = 1, floor: list[str] | None = None) -> dict:
    """Reference, sotakit, reference, sotakit, ... (A B A B, as the issue measured) over ``pairs`` pairs;
    the ratio of each pair is reference time / sotakit time. ``warmup`` untimed runs of each first, so
    every timed run finds the images in the OS file cache (and any cache a script keeps of its own).
    ``floor`` (floor_loop.py) runs third in each pair: reference time / floor time is the most any tool
    could be ahead in that pair."""
    for i in range(warmup):
        wall_time(reference, work / f"{name}-ref", work / f"{name}-ref-warmup-{i}.log")
        wall_time(ours, work / f"{name}-sotakit", work / f"{name}-sotakit-warmup-{i}.log")
        if floor:
            wall_time(floor, work / f"{name}-floor", work / f"{name}-floor-warmup-{i}.log")
    ref_t, our_t, floor_t = [], [], []
    for i in range(pairs):
        ref_t.append(wall_time(reference, work / f"{name}-ref", work / f"{name}-ref-{i}.log"))
        our_t.append(wall_time(ours, work / f"{name}-sotakit", work / f"{name}-sotakit-{i}.log"))
        if floor:
            floor_t.append(wall_time(floor, work / f"{name}-floor", work / f"{name}-floor-{i}.log"))
        print(f"{name} pair {i + 1}: reference {ref_t[-1]:.1f} s, sotakit {our_t[-1]:.1f} s"
              + (f", floor {floor_t[-1]:.1f} s" if floor else ""), flush=True)
    ratios = [r / o for r, o in zip(ref_t, our_t)]
    return {"name": name, "ref": ref_t, "ours": our_t, "ratios": ratios, "floor": floor_t,
            "floor_ratios": [r / f for r, f in zip(ref_t, floor_t)]}


def _fmt(values: list[float], unit: str = "") -> str:
    return (f"{statistics.median(values):.2f}{unit} (min {min(values):.2f}, max {max(values):.2f}, "
            f"n = {len(values)})")


def report(results: list[dict], commands: dict[str, list[str]], *, folder: Path,
           sources: dict[str, str], warmup: int) -> str:
    import timm
    import torchvision
    lines = ["# Side by side: `sotakit train` vs the TorchVision and timm reference scripts", "",
             f"`python benchmarks/side_by_side.py` on {time.strftime('%Y-%m-%d')}",
             f"machine: {machine_line()}",
             f"versions: torch {torch.__version__}, torchvision {torchvision.__version__}, "
             f"timm {timm.__version__}",
             f"reference scripts: {sources['vision']}; {sources['timm']}",
             f"data: {folder} (6,000 train / 1,000 val Fashion-MNIST PNGs at 72 px, 10 classes)",
             "figure: whole-process wall time, alternated reference, sotakit; ratio = reference / sotakit "
             f"(> 1: sotakit faster); {warmup} untimed run(s) of each command first", "",
             "| comparison | reference s (median) | sotakit s (median) | ratio: median (min, max, n) |",
             "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {statistics.median(r['ref']):.1f} | "
                     f"{statistics.median(r['ours']):.1f} | {_fmt(r['ratios'], 'x')} |")
    if any(r["floor"] for r in results):
        lines += ["", "The floor (benchmarks/floor_loop.py: import torch and torchvision, resnet18 on the "
                  "images decoded and resized beforehand, the same 46 steps, no augmentation, one "
                  "evaluation, nothing written) in the same pairs; reference / floor is the most any tool "
                  "could be ahead:",
                  "",
                  "| comparison | floor s (median) | reference / floor: median (min, max, n) | "
                  "sotakit / floor (median) |", "|---|---|---|---|"]
        for r in (r for r in results if r["floor"]):
            ours = statistics.median(o / f for o, f in zip(r["ours"], r["floor"]))
            lines.append(f"| {r['name']} | {statistics.median(r['floor']):.1f} | "
                         f"{_fmt(r['floor_ratios'], 'x')} | {ours:.2f} |")
    lines += ["", "raw seconds (reference; sotakit[; floor]) per pair:"]
    for r in results:
        runs = zip(r["ref"], r["ours"], *([r["floor"]] if r["floor"] else []))
        lines.append(f"- {r['name']}: " + ", ".join("; ".join(f"{t:.1f}" for t in ts) for ts in runs))
    lines += ["", "commands (OUT: a fresh folder per run, also the working directory):", ""]
    for key, cmd in commands.items():
        lines += [f"{key}:", "", "    " + " ".join(cmd), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vision-refs", type=Path, default=os.environ.get("VISION_REFERENCES"),
                   help="folder with TorchVision's references/classification/*.py ($VISION_REFERENCES)")
    p.add_argument("--timm-train", type=Path, default=os.environ.get("TIMM_TRAIN"),
                   help="timm's train.py ($TIMM_TRAIN)")
    p.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "sotakit-fmnist72",
                   help="the image folder (built here when missing)")
    p.add_argument("--pairs", type=int, default=4, help="alternated pairs per comparison (default: 4)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed runs of each command before the pairs (default: 1)")
    p.add_argument("--only", choices=("torchvision", "timm"), help="run one comparison")
    p.add_argument("--floor", action="store_true",
                   help="also time benchmarks/floor_loop.py in every pair (float32 beside TorchVision, bf16 "
                        "and channels-last beside timm): the least any tool could take")
    p.add_argument("--smoke", action="store_true",
                   help="run each command once on a 260 + 100 image copy of the folder (two training steps), "
                        "to check the commands work; no results file")
    args = p.parse_args(argv)
    missing = []
    if args.only != "timm" and (args.vision_refs is None
                                or not all((args.vision_refs / f).is_file() for f in VISION_FILES)):
        missing.append(f"--vision-refs: a folder with {', '.join(VISION_FILES)}")
    if args.only != "torchvision" and (args.timm_train is None or not args.timm_train.is_file()):
        missing.append("--timm-train: timm's train.py")
    if missing:
        raise SystemExit("missing " + "; ".join(missing) + "\n\n" + how_to_get())
    if args.pairs < 1 or args.warmup < 0:
        raise SystemExit("--pairs must be at least 1 (the issue asks for 4 or more), --warmup at least 0")
    sizes = dict(train_per_class=26, val_per_class=10) if args.smoke else {}
    if args.smoke:
        args.folder = args.folder.with_name(args.folder.name + "-smoke")
    if not folder_ok(args.folder, **sizes):
        print(f"building {args.folder} ...", flush=True)
        shutil.rmtree(args.folder, ignore_errors=True)
        make_folder(args.folder, **sizes)
    work = Path(tempfile.mkdtemp(prefix="side-by-side-"))
    out = Path("OUT")
    commands, comparisons = {}, []
    if args.only != "timm":
        commands["torchvision train.py"] = vision_command(args.vision_refs.resolve(), args.folder, out)
        commands["sotakit train (vs torchvision)"] = sotakit_command(args.folder, out)
        comparisons.append(("torchvision", commands["torchvision train.py"],
                            commands["sotakit train (vs torchvision)"]))
    if args.only != "torchvision":
        commands["timm train.py"] = timm_command(args.timm_train.resolve(), args.folder, out)
        ours = "sotakit train --amp --channels-last (vs timm)"
        commands[ours] = sotakit_command(args.folder, out, amp=True)
        comparisons.append(("timm", commands["timm train.py"], commands[ours]))

    def absolute(cmd: list[str], name: str) -> list[str]:  # OUT becomes the run's own folder
        return [str(work / name) if a == "OUT" else a for a in cmd]

    if args.smoke:
        for key, cmd in commands.items():
            name = key.split()[0] + str(abs(hash(key)) % 1000)
            t = wall_time(absolute(cmd, name), work / name, work / f"{name}.log")
            print(f"ok {t:6.1f} s  {key}  (log: {work / name}.log)", flush=True)
        return
    floors = {}
    if args.floor:
        floor_py, cache = Path(__file__).with_name("floor_loop.py"), work / "floor.npz"
        subprocess.run([sys.executable, str(floor_py), "--prepare", str(args.folder), str(cache)], check=True)
        floors = {"torchvision": [sys.executable, str(floor_py), str(cache)],
                  "timm": [sys.executable, str(floor_py), str(cache), "--bf16"]}
        commands.update({f"floor (vs {k})": v for k, v in floors.items()})
    results = [compare(name, absolute(ref, f"{name}-ref"), absolute(ours, f"{name}-sotakit"),
                       pairs=args.pairs, work=work, warmup=args.warmup, floor=floors.get(name))
               for name, ref, ours in comparisons]
    sources = {"vision": _source(args.vision_refs), "timm": _source(args.timm_train)}
    text = report(results, commands, folder=args.folder, sources=sources, warmup=args.warmup)
    path = (Path(__file__).parent / "results"
            / f"side-by-side-{machine_tag()}-torch{torch.__version__.split('+')[0]}.md")
    path.parent.mkdir(exist_ok=True)
    path.write_text(text + "\n")
    print(text)
    shutil.rmtree(work, ignore_errors=True)


def _source(path: Path | None) -> str:
    """Where a reference script came from: a SOURCE file next to it (repository and commit), else its path."""
    if path is None:
        return "not run"
    folder = path if path.is_dir() else path.parent
    note = folder / "SOURCE"
    return note.read_text().strip() if note.is_file() else str(path)


if __name__ == "__main__":
    main()
