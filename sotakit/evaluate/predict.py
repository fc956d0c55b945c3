"""Prediction on new images: each file with its top-k classes and probabilities.

Files are decoded by ``data.images.read_image``, the one reader training uses, so odd images (CMYK,
16-bit, palette, alpha, EXIF-rotated) become the same RGB they would in a training folder; a file it
rejects is returned with the reason instead of stopping the others. Preprocessing is the weights' own
``transforms()``, and probabilities use the temperature `sotakit calibrate` stored (1 otherwise).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from PIL import Image
from torch import nn

from ..data.images import ImageRejected, read_image
from .weights import Weights, load_model

Progress = Callable[[int, int], None]  # progress(images_done, images_total)


@dataclass
class Prediction:
    """One input: its name (file path, or ``#i`` for an in-memory image), the top-k (category,
    probability) pairs best first, and ``error`` (why it was skipped) instead of them."""

    file: str
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None


def find_images(inputs: Iterable[str | Path]) -> tuple[list[str], list[Prediction]]:
    """(files to read, inputs that name none): a file as it is, a folder's files (recursively, sorted,
    hidden ones left out), a glob pattern's matches (``**`` recursive)."""
    files, missing = [], []
    for item in inputs:
        item = str(item)
        if os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(item).parts))
            files += found
            if not found:
                missing.append(Prediction(item, error="empty folder"))
        elif os.path.isfile(item):
            files.append(item)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            files += found
            if not found:
                missing.append(Prediction(item, error="no file matches the pattern"))
        else:
            missing.append(Prediction(item, error="no such file or folder"))
    return files, missing


def read_for_prediction(path: str) -> Image.Image:
    """The file as training would decode it (RGB, upright); ImageRejected with the reason otherwise."""
    try:
        return read_image(path)[0]
    except OSError as e:  # vanished, unreadable (permissions)
        raise ImageRejected("unreadable", f"{type(e).__name__}: {e}") from None


def _inputs(images) -> list:
    if isinstance(images, (str, Path, Image.Image, torch.Tensor)):
        return [images]
    return list(images)


@torch.inference_mode()
def predict(model_or_weights: "nn.Module | Weights | str | Path", images, *, weights: Weights | None = None,
            topk: int = 5, batch_size: int = 32, tta: bool = False, device: torch.device | str = "cpu",
            progress: Progress | None = None) -> list[Prediction]:
    """Top-k classes of each image: the files (folders and patterns expanded, in order), then the
    in-memory images, then the inputs that named no file.

    Args:
        model_or_weights: Weights, a weights file, run directory or registered name; or a model, with
            its ``weights`` (categories, preprocessing, temperature).
        images: file paths, folders and glob patterns (expanded as `sotakit predict` does), PIL images
            or uint8 CHW tensors; one or a list.
        tta: average the probabilities of the image and its horizontal mirror (the flip the training
            augmentation uses).
        progress: called with (images done, total) after each batch.

    Returns:
        One Prediction per image; a file that cannot be read has ``error`` set and no classes.
    """
    if isinstance(model_or_weights, nn.Module):
        if weights is None:
            raise TypeError("predict(model, ...) needs weights=: their categories and preprocessing")
        model, w = model_or_weights.to(device).eval(), weights
    else:
        model, w = load_model(model_or_weights, device=device)
    inputs = _inputs(images)
    files, missing = find_images([i for i in inputs if isinstance(i, (str, Path))])
    items = [(f, None) for f in files] + [(f"#{i}", im) for i, im in enumerate(inputs)
                                          if not isinstance(im, (str, Path))]
    preprocess, k, temperature = w.transforms(), min(topk, len(w.categories)), w.temperature
    results: dict[int, Prediction] = {}
    for start in range(0, len(items), batch_size):
        batch, slots = [], []
        for j, (name, image) in enumerate(items[start:start + batch_size], start):
            try:
                image = read_for_prediction(name) if image is None else image
                batch.append(preprocess(image))
                slots.append(j)
            except ImageRejected as e:
                results[j] = Prediction(name, error=f"{e.reason}: {e.detail}")
        if batch:
            x = torch.stack(batch).to(device)
            probs = class_probabilities(model, x, temperature=temperature, tta=tta)
            values, indices = probs.topk(k, dim=1)
            for j, v, idx in zip(slots, values.tolist(), indices.tolist()):
                results[j] = Prediction(items[j][0], [(w.categories[c], p) for c, p in zip(idx, v)])
        if progress is not None:
            progress(min(start + batch_size, len(items)), len(items))
    return [results[j] for j in range(len(items))] + missing


def class_probabilities(model: nn.Module, x: torch.Tensor, *, temperature: float = 1.0,
                        tta: bool = False) -> torch.Tensor:
    """softmax(logits / T), averaged with the mirrored image's when ``tta``."""
    probs = (model(x).float() / temperature).softmax(dim=1)
    if tta:
        probs = (probs + (model(x.flip(-1)).float() / temperature).softmax(dim=1)) / 2
    return probs
