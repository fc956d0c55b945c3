"""Random-resized crop and flip for a whole batch of in-memory images at once.

For data held as uint8 tensors (Fashion-MNIST, CIFAR) per-image transforms are a large share of a
training step on a 2-core CPU: with them, resnet9_w16 trains at 0.76 (2-core EPYC) to 0.80 (2-core
Xeon) of the speed it reaches with this batch path (benchmarks/results/throughput-*). Here the
crop boxes are drawn for the whole batch with torchvision's RandomResizedCrop rule (10 tries of
area and log-aspect, then the center-crop fallback), and the crops are resampled in one
``torchvision.ops.roi_align`` call: plain bilinear sampling where a crop is enlarged, and a mean
of 2x2 samples per output pixel where it is shrunk up to 2x (a box-filter antialiasing;
torchvision's resize uses a triangle filter). Written by hand because torchvision's v2 transforms draw one
set of parameters per call, not per image of a batch. ``batch_crop_for`` decides from the per-image
transform itself: the batch path replaces it only when it is exactly crop + flip, optionally followed
by TrivialAugmentWide or RandAugment (batched in ``batch_autoaugment``), so any other per-image step
(AutoAugment, AugMix, colour jitter, one added later) keeps the per-image path by construction. The
airbench pipeline does the same on the GPU. ``BatchErasing`` is RandomErasing with a box per image.
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align
from torchvision.transforms import v2

from .batch_autoaugment import BatchAutoAugment, batch_policy_for
from .samplers import sample_uniforms

ERASE_STREAM = 2  # sample_uniforms stream of the erasing draws (the policies use 1)


def sample_crop_boxes(n: int, height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                      tries: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 4) boxes (top, left, h, w), distributed as RandomResizedCrop.get_params draws them."""
    area = height * width
    target = area * torch.empty(n, tries).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok.any(dim=1), ok.float().argmax(dim=1), torch.full((n,), -1))
    rows = torch.arange(n)
    h, w = h[rows, first.clamp(min=0)], w[rows, first.clamp(min=0)]
    # Fallback when no try fits: the largest center crop with the ratio clamped to the range.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fh, fw = height, round(height * max(ratio))
    else:
        fw, fh = width, height
    fail = first < 0
    h = torch.where(fail, torch.tensor(float(fh)), h)
    w = torch.where(fail, torch.tensor(float(fw)), w)
    u = torch.rand(n, 2, generator=generator)
    top = torch.floor(u[:, 0] * (height - h + 1))
    left = torch.floor(u[:, 1] * (width - w + 1))
    top = torch.where(fail, torch.floor((height - h) / 2), top)
    left = torch.where(fail, torch.floor((width - w) / 2), left)
    return torch.stack([top, left, h, w], dim=1)


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image to its (top, left, h, w) box and resize to ``size`` x ``size`` (float out)."""
    x = images.float()
    top, left, h, w = boxes.unbind(dim=1)
    rois = torch.stack([torch.arange(len(x), dtype=x.dtype), left, top, left + w, top + h], dim=1)
    # sampling_ratio=0: ceil(box / size) samples per output pixel and axis: one sample at the pixel
    # center when not shrinking (exact bilinear, no blur), a 2x2 mean when shrinking up to 2x.
    return roi_align(x, rois, output_size=size, spatial_scale=1.0, sampling_ratio=0, aligned=True)


def draw_keys(n: int) -> torch.Tensor:
    """Per-image keys from the global generator, for batches that carry no per-sample seeds."""
    return torch.randint(0, 2**62, (n,))


class BatchCropFlip:
    """uint8 batch in, float batch (0-255 scale) of crops out, each flipped with ``hflip_prob``, then
    through ``augment`` (a batched TrivialAugmentWide / RandAugment) when given.

    The crops are rounded to uint8 before ``augment``, as the per-image crop returns uint8 images to
    the policy. ``keys``: the batch's per-sample seeds, which seed each image's policy draws.
    """

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip_prob: float = 0.5,
                 augment: BatchAutoAugment | None = None):
        self.size, self.scale, self.ratio, self.hflip_prob = size, scale, ratio, hflip_prob
        self.augment = augment

    def __call__(self, images: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        n, _, height, width = images.shape
        out = resized_crops(images, sample_crop_boxes(n, height, width, self.scale, self.ratio), self.size)
        if self.hflip_prob > 0:
            flip = torch.rand(n) < self.hflip_prob
            out = torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)
        if self.augment is not None:
            crops = out.round_().clamp_(0, 255).to(torch.uint8)
            out = self.augment(crops, draw_keys(n) if keys is None else keys).float()
        return out


def erase_boxes(keys: torch.Tensor, height: int, width: int, p: float, scale=(0.02, 0.33),
                ratio=(0.3, 3.3), tries: int = 10) -> torch.Tensor:
    """(n, 4) boxes (top, left, h, w) drawn as v2.RandomErasing draws them, h = 0 for no erasing.

    Per image: erase with probability ``p``; up to ``tries`` of area and log-aspect, the first whose
    box is smaller than the image in both sides wins, then a uniform position; no box fits: none.
    Each image draws from its own key.
    """
    u = sample_uniforms(keys, ERASE_STREAM, 3 + 2 * tries)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:, 3:3 + tries])
    log_lo, log_hi = torch.log(torch.tensor(ratio, dtype=torch.float32)).tolist()
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 3 + tries:])
    h = torch.round(torch.sqrt(area * aspect))  # round half to even, as Python's round
    w = torch.round(torch.sqrt(area / aspect))
    ok = (h < height) & (w < width)
    first = ok.float().argmax(dim=1)
    rows = torch.arange(len(keys))
    h, w = h[rows, first], w[rows, first]
    erase = (u[:, 0] < p) & ok.any(dim=1)
    top = torch.floor(u[:, 1] * (height - h + 1))
    left = torch.floor(u[:, 2] * (width - w + 1))
    return torch.stack([top, left, torch.where(erase, h, 0), torch.where(erase, w, 0)], dim=1).long()


class BatchErasing:
    """v2.RandomErasing(p, inplace=True) (value 0) on a float batch, each image with its own box, in one
    masked fill of the images erased."""

    def __init__(self, p: float, scale=(0.02, 0.33), ratio=(0.3, 3.3)):
        self.p, self.scale, self.ratio = p, scale, ratio

    def __call__(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        n, _, height, width = x.shape
        keys = draw_keys(n) if keys is None else keys
        boxes = erase_boxes(keys, height, width, self.p, self.scale, self.ratio)
        erased = torch.nonzero(boxes[:, 2] > 0).flatten()  # the mask only for the images erased
        top, left, h, w = boxes[erased].view(-1, 4, 1, 1).unbind(1)
        ys, xs = torch.arange(height).view(1, -1, 1), torch.arange(width).view(1, 1, -1)
        inside = (ys >= top) & (ys < top + h) & (xs >= left) & (xs < left + w)
        x[erased] = x[erased].masked_fill_(inside.unsqueeze(1), 0.0)
        return x


def batch_crop_for(transform: v2.Compose, *, in_memory: bool) -> BatchCropFlip | None:
    """The batch equivalent of ``transform`` when it is exactly ToImage, a bilinear RandomResizedCrop,
    an optional RandomHorizontalFlip, an optional TrivialAugmentWide or RandAugment (nearest or
    bilinear, zero fill) and ToPureTensor, on in-memory data; else None.

    roi_align samples bilinearly, so other interpolations keep the per-image path.
    """
    steps = list(transform.transforms)
    if not in_memory or [type(t) for t in steps[:2]] != [v2.ToImage, v2.RandomResizedCrop]:
        return None
    crop, rest = steps[1], steps[2:]
    flip = rest.pop(0) if rest and type(rest[0]) is v2.RandomHorizontalFlip else None
    augment = batch_policy_for(rest[0]) if len(rest) == 2 else None
    if augment is not None:
        rest.pop(0)
    square = crop.size[0] == crop.size[1]
    if [type(t) for t in rest] != [v2.ToPureTensor] or crop.interpolation != v2.InterpolationMode.BILINEAR \
            or not square:
        return None
    return BatchCropFlip(crop.size[0], scale=tuple(crop.scale), ratio=tuple(crop.ratio),
                         hflip_prob=flip.p if flip is not None else 0.0, augment=augment)
