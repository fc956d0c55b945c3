"""What the start-up machine probe and --compile buy: training img/s of one recipe's steps in each
precision, memory format and compile setting, as ratios in one run (issue 14).

Run by hand (the machine should be otherwise idle; inductor builds C++ and takes minutes the first time):

    .venv/bin/python benchmarks/runtime.py

Each setting trains EPOCHS short epochs of resnet9_w16 on Fashion-MNIST (28 px, batch 256, in-memory
batch crops) with sotakit's ``train_one_epoch`` in a fresh process; the first epoch is a warm-up (and
compiles), the figure is the median img/s of the others, which exclude any step that compiled.
Settings run interleaved over REPEATS rounds, so drift in the machine's load hits them alike. Writes
benchmarks/results/runtime-<machine>-torch<version>.md.
"""

from __future__ import annotations

import platform
import statistics
import subprocess
import sys
import time

import torch
from throughput import ratio_rows, write_results  # a sibling script: the results file named by machine
from torch import nn

from sotakit.data import load_data, make_loaders, set_data_epoch
from sotakit.models import build_model
from sotakit.train import train_one_epoch
from sotakit.train.machine import cpu_name, probe_machine

EPOCHS, REPEATS, BATCH, STEPS = 4, 3, 256, 20
CPU = torch.device("cpu")
SETTINGS = {
    "float32, NCHW (the recipe's default)": dict(amp=False, channels_last=False, compile=False),
    "float32, channels-last": dict(amp=False, channels_last=True, compile=False),
    "bf16 autocast, NCHW": dict(amp=True, channels_last=False, compile=False),
    "bf16 autocast, channels-last": dict(amp=True, channels_last=True, compile=False),
    "float32, --compile": dict(amp=False, channels_last=False, compile=True),
    "bf16 autocast, channels-last, --compile": dict(amp=True, channels_last=True, compile=True),
}


def run(*, amp: bool, channels_last: bool, compile: bool) -> float:
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    loaders = make_loaders(load_data("fashion-mnist"), batch_size=BATCH, train_crop_size=28,
                           val_resize_size=28, val_crop_size=28, crop_min_scale=0.8,
                           train_limit=BATCH * STEPS)
    model = build_model("resnet9_w16", num_classes=10, small_input=True)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    train_model = torch.compile(model) if compile else model
    criterion, rates = nn.CrossEntropyLoss(label_smoothing=0.1), []
    for epoch in range(EPOCHS):
        set_data_epoch(loaders, epoch=epoch, seed=0)
        stats = train_one_epoch(train_model, loaders.train, opt, criterion=criterion, device=CPU,
                                epoch=epoch, channels_last=channels_last,
                                amp_dtype=torch.bfloat16 if amp else None)
        rates.append(stats["img_s"])
    return statistics.median(rates[1:])


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(run(**SETTINGS[sys.argv[2]]))
        return
    results = {name: [] for name in SETTINGS}
    for _ in range(REPEATS):
        for name in SETTINGS:
            out = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True,
                                 check=True)
            results[name].append(float(out.stdout.strip().splitlines()[-1]))
    probe, _ = probe_machine(refresh=True)
    base = statistics.median(results[next(iter(SETTINGS))])
    lines = [f"# Precision, memory format and --compile: resnet9_w16 on Fashion-MNIST 28 px, batch {BATCH}",
             "",
             f"`.venv/bin/python benchmarks/runtime.py` on {time.strftime('%Y-%m-%d')}",
             f"machine: {platform.machine()} {cpu_name()}, {torch.get_num_threads()} threads; python "
             f"{platform.python_version()}, torch {torch.__version__}",
             f"machine probe: {probe}",
             f"{STEPS} steps an epoch, {EPOCHS} epochs (the first a warm-up), median img/s of the rest, each "
             f"setting in a fresh process, {REPEATS} interleaved repeats", "",
             "| setting | img/s (median of repeats) | repeats | ratio to float32 NCHW |", "|---|---|---|---|"]
    lines += ratio_rows(results, base)
    write_results("runtime", lines)


if __name__ == "__main__":
    main()
