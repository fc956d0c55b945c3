"""Train and eval preprocessing, as TorchVision's ``ClassificationPresetTrain/Eval`` with transforms.v2.

Split in two so the per-image Python work stays small: the per-image part (crop, flip, automatic
augmentation) works on uint8 images, PIL or tensor; the batch part (``BatchFinish``, run in the
collate function) converts the whole batch to float, makes grayscale RGB, normalizes and applies
random erasing with a box per image (``BatchErasing``). Converting and normalizing a batch at once
costs a fraction of doing it image by image (about 0.17 of 0.4 ms per 28 px image, timed with v2
transforms one by one).
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from .batch_augment import BatchErasing

INTERPOLATION = {"nearest": v2.InterpolationMode.NEAREST, "bilinear": v2.InterpolationMode.BILINEAR,
                 "bicubic": v2.InterpolationMode.BICUBIC}


def auto_augment_transform(policy: str, interpolation: str, ra_magnitude: int = 9, augmix_severity: int = 3):
    """The reference's --auto-augment choices, each a torchvision v2 transform."""
    mode = INTERPOLATION[interpolation]
    if policy == "ta_wide":
        return v2.TrivialAugmentWide(interpolation=mode)
    if policy == "ra":
        return v2.RandAugment(interpolation=mode, magnitude=ra_magnitude)
    if policy == "augmix":
        return v2.AugMix(interpolation=mode, severity=augmix_severity)
    return v2.AutoAugment(v2.AutoAugmentPolicy(policy), interpolation=mode)


def make_train_transform(*, crop_size: int, interpolation: str = "bilinear", hflip_prob: float = 0.5,
                         auto_augment: str | None = None, ra_magnitude: int = 9, augmix_severity: int = 3,
                         crop_min_scale: float = 0.08, color_jitter: float = 0.0) -> v2.Compose:
    """Per-image training transform: uint8 image in, uint8 CHW tensor of ``crop_size`` out.

    ``color_jitter`` f: brightness, contrast and saturation each scaled by a factor drawn from
    [1 - f, 1 + f], hue left alone (timm's ``--color-jitter``; fastai's lighting transforms vary
    brightness and contrast the same way). Saturation leaves one-channel images unchanged.
    """
    mode = INTERPOLATION[interpolation]
    steps = [v2.ToImage(),
             v2.RandomResizedCrop(crop_size, scale=(crop_min_scale, 1.0), interpolation=mode, antialias=True)]
    if hflip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(hflip_prob))
    if color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    if auto_augment:
        steps.append(auto_augment_transform(auto_augment, interpolation, ra_magnitude, augmix_severity))
    steps.append(v2.ToPureTensor())
    return v2.Compose(steps)


def make_eval_transform(*, resize_size: int, crop_size: int, interpolation: str = "bilinear") -> v2.Compose:
    """Per-image eval transform: resize the short side, center crop; uint8 out."""
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize_size, interpolation=INTERPOLATION[interpolation], antialias=True),
        v2.CenterCrop(crop_size),
        v2.ToPureTensor(),
    ])


# AlexNet's PCA of ImageNet's RGB pixels in [0, 1] (fb.resnet.torch datasets/imagenet.lua, copied by
# pycls and the Keras RegNet trainer): eigenvalues, and eigenvectors as the COLUMNS (rows are R, G, B).
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                       (-0.5808, -0.0045, -0.8140),
                       (-0.5836, -0.6948, 0.4203))


class PCALighting:
    """AlexNet's PCA colour jitter on a float RGB batch in [0, 1]: each image gets the colour offset
    ``sum_j eigvec[:, j] * alpha_j * eigval_j``, ``alpha_j ~ N(0, std)`` drawn per image, then the
    batch is clipped to [0, 1] (the Keras RegNet trainer's uint8 cast). Hand-written: torchvision has
    no lighting transform. ``eigval``/``eigvec`` default to ImageNet's; a data set's own fit as well.
    """

    def __init__(self, std: float, eigval=IMAGENET_PCA_EIGVAL, eigvec=IMAGENET_PCA_EIGVEC):
        self.std = std
        self.eigval = torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float32)

    def offsets(self, alpha: torch.Tensor) -> torch.Tensor:
        """(B, 3) RGB offsets for (B, 3) draws ``alpha``: row b is ``eigvec @ (alpha[b] * eigval)``."""
        return (alpha * self.eigval) @ self.eigvec.T

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(len(x), 3) * self.std
        return (x + self.offsets(alpha).view(-1, 3, 1, 1)).clamp_(0, 1)


class BatchFinish:
    """uint8 batch (B, C, H, W) -> normalized float RGB batch, with PCA lighting (RGB data only) and
    per-image random erasing.

    ``for_eval``: scaled to [0, 1] as ``v2.ToDtype(scale=True)`` does (x * (1/255)), so one image through
    ``make_preprocess_transform`` (``Weights.transforms()``) gets, bit for bit, the floats of its eval
    batch. Training batches keep x / 255 (half the byte values differ from x * (1/255) in the last bit),
    so training runs are the same as before weights files existed.
    """

    def __init__(self, mean, std, random_erase: float = 0.0, crop=None, lighting: PCALighting | None = None,
                 for_eval: bool = False):
        self.crop, self.for_eval = crop, for_eval  # crop: an optional BatchCropFlip first, for in-memory data
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.erase = BatchErasing(random_erase) if random_erase > 0 else None
        self.lighting = lighting

    def __call__(self, images: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """``keys``: the batch's per-sample seeds (each image's policy and erasing draws), if it has them."""
        if self.for_eval:
            x = v2.functional.to_dtype(images, torch.float32, scale=True)
        else:
            x = (self.crop(images, keys) if self.crop is not None else images.float()).div_(255)
        if self.lighting is not None and x.shape[1] == 3:  # grayscale has no colour to shift (run note)
            x = self.lighting(x)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale as RGB, so every architecture takes it
        x = (x - self.mean) / self.std
        if self.erase is not None:
            x = self.erase(x, keys)  # after Normalize as in the reference; a box per image, batched
        return x


class GrayAsRGB(v2.Transform):
    """uint8 image -> its luminance (ITU-R 601, as ``v2.Grayscale``) in 3 equal channels, rounded.

    Hand-written because ``v2.Grayscale`` truncates: its weights sum to 0.9999, so a gray pixel v of
    an RGB file comes out as v - 1, and a grayscale file would not give the values a model trained on
    one-channel tensors saw. Rounding gives v back exactly; a one-channel input is only replicated.
    """

    _transformed_types = (torch.Tensor,)

    def transform(self, inpt, params):
        if inpt.shape[-3] == 1:
            return inpt.expand(*inpt.shape[:-3], 3, *inpt.shape[-2:]).clone()
        r, g, b = inpt.float().unbind(-3)
        gray = (0.2989 * r + 0.587 * g + 0.114 * b).round_().clamp_(0, 255).to(inpt.dtype)
        return torch.stack([gray] * 3, dim=-3)


def make_preprocess_transform(*, resize_size: int, crop_size: int, mean, std, interpolation: str = "bilinear",
                              antialias: bool = True, channels: int = 3) -> v2.Compose:
    """The eval preprocessing of one image as a single v2 transform (what ``Weights.transforms()`` returns).

    The steps of torchvision's ``ImageClassification`` preset (resize the short side, center crop,
    to float in [0, 1], normalize), with this run's sizes and statistics, and the same values as the
    eval loader's ``make_eval_transform`` + ``BatchFinish``. A model trained on one-channel images
    (``channels`` 1) sees colour input as grayscale, replicated to the 3 channels it was trained on.
    """
    steps = [v2.ToImage(),
             v2.Resize(resize_size, interpolation=INTERPOLATION[interpolation], antialias=antialias),
             v2.CenterCrop(crop_size)]
    if channels == 1:
        steps.append(GrayAsRGB())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)), v2.ToPureTensor()]
    return v2.Compose(steps)
