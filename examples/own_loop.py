"""The pytorch-nn-tools write-up's Trainer as a plain loop with sotakit's helpers (no trainer class).

Train and validate each epoch, aggregate and log the metrics, keep the best checkpoint by validation
accuracy, and resume where a stopped run left off. Run it twice with --stop-after to see the resume:

    python examples/own_loop.py --data fashion-mnist --train-limit 2000 --epochs 4 --out loop_run
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from sotakit import (
    Checkpoints,
    MetricAggregator,
    MetricLogger,
    ProgressBars,
    build_model,
    build_optimizer,
    improved,
    load_data,
    make_loaders,
    prefixed,
)
from sotakit.data import set_data_epoch
from sotakit.evaluate import topk_correct


def train_epoch(model, loader, optimizer, scheduler, aggregate, bars):
    model.train()
    for images, targets in bars.steps(loader):
        loss = F.cross_entropy(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()  # one-cycle: a step per batch
        aggregate(prefixed({"loss": loss}, "train"), n=len(images))


@torch.no_grad()
def validate_epoch(model, loader, aggregate, bars):
    model.eval()
    for images, targets in bars.steps(loader):
        logits = model(images)
        (c1,) = topk_correct(logits, targets, ks=(1,))
        aggregate(prefixed({"loss": F.cross_entropy(logits, targets), "acc1": 100 * c1 / len(images)}, "val"),
                  n=len(images))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--model", default="resnet9_w16")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-limit", type=int, default=2000)
    p.add_argument("--out", default="loop_run")
    p.add_argument("--stop-after", type=int, default=0, help="stop after this many epochs (then run again)")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    bundle = load_data(args.data)
    small = bundle.native_size <= 64
    size = bundle.native_size if small else 224
    loaders = make_loaders(bundle, batch_size=args.batch_size, train_crop_size=size, val_resize_size=size,
                           val_crop_size=size, train_limit=args.train_limit, test_limit=args.train_limit // 4)
    model = build_model(args.model, num_classes=len(bundle.classes), small_input=small)
    optimizer = build_optimizer(model.parameters(), opt="adamw", lr=args.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, epochs=args.epochs,
                                                    steps_per_epoch=len(loaders.train))
    checkpoints = Checkpoints(f"{args.out}/checkpoints", save_if=improved("val.acc1"))
    start = checkpoints.load_last(model=model, optimizer=optimizer, scheduler=scheduler)
    if start:
        print(f"resuming at epoch {start}")
    bars = ProgressBars()
    with MetricLogger(args.out) as log:
        for epoch in bars.epochs(range(start, args.epochs)):
            set_data_epoch(loaders, epoch=epoch)  # the epoch's data order: the same after a resume
            aggregate = MetricAggregator()
            train_epoch(model, loaders.train, optimizer, scheduler, aggregate, bars)
            validate_epoch(model, loaders.test, aggregate, bars)
            metrics = {**aggregate.aggregate(), "lr": scheduler.get_last_lr()[0]}
            log(metrics, step=epoch)
            best = checkpoints.save(epoch, metrics, model=model, optimizer=optimizer, scheduler=scheduler)
            bars.comment(f"val acc@1 {metrics['val.acc1']:.2f}" + (" (best)" if best else ""))
            if args.stop_after and epoch + 1 == args.stop_after:
                print(f"stopped after epoch {epoch}")
                break


if __name__ == "__main__":
    main()
