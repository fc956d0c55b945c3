"""The write-up's LR-finder step with sotakit.lr_find in a loop of your own: find the lr, then one-cycle.

pytorch-lr-finder needed ``reset()`` and a scheduler created afterwards; ``lr_find`` puts the model,
optimizer, BatchNorm statistics and RNGs back by itself, so the run that follows is the one you wrote:

    python examples/lr_find.py --data fashion-mnist --train-limit 2000 --epochs 2
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from sotakit import build_model, build_optimizer, evaluate, load_data, lr_find, make_loaders
from sotakit.data import set_data_epoch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--model", default="resnet9_w16")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-limit", type=int, default=2000)
    p.add_argument("--steps", type=int, default=100, help="batches of the range test")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    bundle = load_data(args.data)
    size = bundle.native_size
    loaders = make_loaders(bundle, batch_size=args.batch_size, train_crop_size=size, val_resize_size=size,
                           val_crop_size=size, train_limit=args.train_limit, test_limit=args.train_limit // 4)
    model = build_model(args.model, num_classes=len(bundle.classes), small_input=size <= 64)
    optimizer = build_optimizer(model.parameters(), opt="adamw", lr=1e-3, weight_decay=1e-4)

    found = lr_find(model, loaders.train, optimizer, criterion=torch.nn.CrossEntropyLoss(), num_it=args.steps)
    print(found.summary())
    lr = found.valley
    for group in optimizer.param_groups:
        group["lr"] = lr
    # The scheduler after the finder: torch's schedulers record the lr they start from.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=args.epochs,
                                                    steps_per_epoch=len(loaders.train))
    for epoch in range(args.epochs):
        set_data_epoch(loaders, epoch=epoch)
        model.train()
        for images, targets in loaders.train:
            loss = F.cross_entropy(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        print(f"epoch {epoch}: lr {lr:.3g}, test acc@1 {evaluate(model, loaders.test)['acc1']:.2f}")


if __name__ == "__main__":
    main()
