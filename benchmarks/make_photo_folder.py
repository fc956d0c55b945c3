"""A stand-in for a newcomer's photo folder: 3 classes, 96 real images, 100-494 px, JPEG and PNG.

No photo data set can be downloaded here, so the images are real Fashion-MNIST ones (T-shirt,
Trouser, Bag; 24 train and 8 val per class), upscaled to a seeded random size and saved half as
JPEG, half as PNG. Run by hand: ``python benchmarks/make_photo_folder.py DIR``, then
``sotakit train --data DIR`` (README "Scaling rules" quotes the result).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from PIL import Image

from sotakit.data import load_data


def main(root: Path) -> None:
    bundle = load_data("fashion-mnist")
    rng = random.Random(0)
    for split, n, source in (("train", 24, bundle.train), ("val", 8, bundle.test)):
        for label, name in ((0, "tshirt"), (1, "trouser"), (8, "bag")):
            picked = [i for i in range(len(source)) if int(source.targets[i]) == label][:n]
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(picked):
                size = rng.randint(100, 494)
                image = Image.fromarray(source.images[i][0].numpy()).convert("RGB")
                image.resize((size, size), Image.BICUBIC).save(folder / f"{k}.{'jpg' if k % 2 else 'png'}")
    print(f"{sum(1 for _ in root.rglob('*.*'))} images in {root}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
