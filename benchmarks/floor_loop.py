"""The least a whole training process can take for the side-by-side's work: a floor under any tool.

    .venv/bin/python benchmarks/floor_loop.py --prepare FOLDER CACHE.npz    # untimed: decode once
    .venv/bin/python benchmarks/floor_loop.py CACHE.npz [--bf16]             # timed by side_by_side.py

The timed process imports torch and torchvision (what any of the three scripts must), builds resnet18
(ImageNet stem, 10 classes), reads the training and validation images already decoded and resized to the
32 px crop (uint8, from ``--prepare``), trains one epoch of the side-by-side's steps (46 of batch 128,
SGD, no augmentation, no EMA, no checkpoint) and evaluates the 1,000 validation images once. Its wall
time is what a tool would take with no start-up of its own, no folder scan, no decoding, no
augmentation and nothing written: reference time / floor time bounds the speed-up any tool can show
over the reference at that precision (side_by_side.py ``--floor`` reports it).
"""

from __future__ import annotations

import argparse
import sys
import time

T0 = time.perf_counter()

STEPS, BATCH, CROP = 46, 128, 32


def prepare(folder: str, out: str) -> None:
    import numpy as np
    import torch
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2
    resize = v2.Compose([v2.PILToTensor(), v2.Resize(CROP, antialias=True), v2.CenterCrop(CROP)])
    arrays = {}
    for split in ("train", "val"):
        ds = ImageFolder(f"{folder}/{split}")
        images = torch.stack([resize(ds.loader(p)) for p, _ in ds.samples])
        arrays[split] = images.numpy()
        arrays[f"{split}_labels"] = np.array(ds.targets, dtype=np.int64)
    np.savez(out, **arrays)


def run(cache: str, *, bf16: bool) -> None:
    import numpy as np
    import torch
    import torchvision
    from torch import nn
    data = np.load(cache)
    train, labels = torch.from_numpy(data["train"]), torch.from_numpy(data["train_labels"])
    val, val_labels = torch.from_numpy(data["val"]), torch.from_numpy(data["val_labels"])
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.0625, momentum=0.9, weight_decay=2e-5)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    order = torch.randperm(len(train))

    def batch(images: torch.Tensor) -> torch.Tensor:
        return ((images.float() / 255 - 0.5) / 0.25).contiguous(memory_format=fmt)

    model.train()
    for k in range(STEPS):
        idx = order[k * BATCH:(k + 1) * BATCH]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = criterion(model(batch(train[idx])), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    correct = 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(val), 256):
            correct += (model(batch(val[i:i + 256])).argmax(1) == val_labels[i:i + 256]).sum().item()
    print(f"floor: {STEPS} steps, val acc {100 * correct / len(val):.2f}%, "
          f"{time.perf_counter() - T0:.1f} s since the interpreter started this file", file=sys.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prepare", nargs=2, metavar=("FOLDER", "CACHE"))
    p.add_argument("cache", nargs="?")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast and channels-last")
    args = p.parse_args()
    if args.prepare:
        prepare(*args.prepare)
    elif args.cache:
        run(args.cache, bf16=args.bf16)
    else:
        p.error("give CACHE.npz, or --prepare FOLDER CACHE.npz")


if __name__ == "__main__":
    main()
