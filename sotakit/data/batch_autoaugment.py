"""TrivialAugmentWide and RandAugment for a whole uint8 batch, each image with its own op and magnitude.

torchvision's v2 policies draw one op per call, so a batch costs one Python call chain per image.
Here every image draws its op, magnitude bin and sign from its own per-sample key
(``sample_uniforms``: the same distributions as torchvision's draws, uniform over the same op
table), and each op then runs once on the group of images that drew it, with the per-image
magnitudes as tensors: the colour ops blend with a per-image factor, posterize and solarize use a
per-image mask and threshold, and the five geometric ops share one ``grid_sample`` call on
per-image affine grids. The op table, magnitude bins and inverse affine matrices are torchvision's
own (``_AUGMENTATION_SPACE``, ``_get_inverse_affine_matrix``), and each op repeats the arithmetic of
its v2 kernel, so an image comes out as ``TrivialAugmentWide._apply_image_or_video_transform`` makes
it (tests/data/test_batch_policies.py checks each op against it). Hand-written because torchvision
has no per-image parameters within one call.
"""

from __future__ import annotations

import math

import torch
from torch.nn.functional import conv2d, grid_sample
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2.functional._geometry import _get_inverse_affine_matrix

from .samplers import sample_uniforms

GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
POLICY_STREAM = 1  # sample_uniforms stream of the policy's draws (erasing has its own)


def _blend(image1: torch.Tensor, image2: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """v2's ``_blend`` (``image1 * r + image2 * (1 - r)``, clamped, truncated to uint8), r per image.

    torchvision multiplies by ``float(r)`` (float32 in the kernel), then adds ``image2`` with
    ``alpha=1 - r`` in a fused multiply-add; the float64 sum below rounds once to float32 as the
    fused operation does (both products of float32 values are exact in float64).
    """
    r = ratio.view(-1, 1, 1, 1)
    scaled = image1.float().mul(r.float())
    out = scaled.double().addcmul_(image2.double(), (1.0 - r).float().double()).float()
    return out.clamp_(0, 255).to(torch.uint8)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """Float luminance of a uint8 RGB batch, floored, as v2's saturation and contrast compute it."""
    r, g, b = x.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3).floor_()


def _sharpen(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """v2's ``adjust_sharpness_image`` with a per-image factor (the border pixels stay as they are)."""
    if x.shape[-1] <= 2 or x.shape[-2] <= 2:
        return x
    c = x.shape[1]
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]]).expand(c, 1, 3, 3)
    out = x.to(torch.float32, copy=True)
    blurred = conv2d(out, kernel, groups=c).round_()
    view = out[..., 1:-1, 1:-1]
    alpha = (1.0 - factor).float().double().view(-1, 1, 1, 1)
    # view + (blurred - view) * (1 - f) as one fused multiply-add (see _blend)
    view.copy_(blurred.sub_(view).double().mul_(alpha).add_(view.double()).float())
    return out.clamp_(0, 255).to(torch.uint8)


def _color_op(x: torch.Tensor, name: str, mag: torch.Tensor) -> torch.Tensor:
    """One non-geometric op on the images ``x`` that drew it, magnitudes ``mag`` (float64, per image)."""
    if name == "Brightness":
        return x.float().mul_((1.0 + mag).float().view(-1, 1, 1, 1)).clamp_(0, 255).to(torch.uint8)
    if name == "Color":
        return x if x.shape[1] == 1 else _blend(x, _grayscale(x), 1.0 + mag)
    if name == "Contrast":
        gray = _grayscale(x) if x.shape[1] == 3 else x.float()
        return _blend(x, gray.mean(dim=(-3, -2, -1), keepdim=True), 1.0 + mag)
    if name == "Sharpness":
        return _sharpen(x, 1.0 + mag)
    if name == "Posterize":
        bits = mag.long().clamp(0, 8)  # v2: int(magnitude); 8 bits keep the image
        mask = torch.bitwise_left_shift((torch.bitwise_left_shift(torch.ones_like(bits), bits) - 1), 8 - bits)
        return x & mask.to(torch.uint8).view(-1, 1, 1, 1)
    if name == "Solarize":
        # v2 compares the uint8 image with float(255 * magnitude), a float32 in the comparison
        threshold = (255.0 * mag).float().view(-1, 1, 1, 1)
        return torch.where(x.float() >= threshold, 255 - x, x)
    if name == "AutoContrast":
        return F.autocontrast(x)
    if name == "Equalize":
        return F.equalize(x)
    if name == "Invert":
        return F.invert(x)
    raise ValueError(f"no batched op {name}")


def _inverse_matrix(name: str, magnitude: float, height: int, width: int) -> list[float]:
    """The inverse affine matrix torchvision's policy op ``name`` builds for ``magnitude``."""
    if name in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(magnitude))
        # center=[0, 0] (the top-left corner), relative to the image center
        return _get_inverse_affine_matrix([-width * 0.5, -height * 0.5], 0.0, [0.0, 0.0], 1.0,
                                          [shear, 0.0] if name == "ShearX" else [0.0, shear])
    if name in ("TranslateX", "TranslateY"):
        shift = [float(int(magnitude)), 0.0] if name == "TranslateX" else [0.0, float(int(magnitude))]
        return _get_inverse_affine_matrix([0.0, 0.0], 0.0, shift, 1.0, [0.0, 0.0])
    return _get_inverse_affine_matrix([0.0, 0.0], -(magnitude % 360), [0.0, 0.0], 1.0, [0.0, 0.0])


def _geometric_ops(x: torch.Tensor, names: list[str], mags: list[float], interpolation: str) -> torch.Tensor:
    """Each image through its geometric op: one grid_sample over per-image grids, as v2's
    ``_affine_grid`` and ``_apply_grid_transform`` build them (zero fill)."""
    n, _, h, w = x.shape
    theta = torch.tensor([_inverse_matrix(nm, m, h, w) for nm, m in zip(names, mags)],
                         dtype=torch.float32).view(n, 2, 3)
    base = torch.empty(1, h, w, 3)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scaled = theta.transpose(1, 2).div_(torch.tensor([0.5 * w, 0.5 * h]))
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(scaled).view(n, h, w, 2)
    out = grid_sample(x.float(), grid, mode=interpolation, padding_mode="zeros", align_corners=False)
    out = out.round_().to(torch.uint8)
    for i, (nm, m) in enumerate(zip(names, mags)):  # v2.rotate's exact fast paths (no resampling)
        quarter = (m % 360) / 90 if nm == "Rotate" else 0.5
        if quarter == int(quarter) and (quarter % 2 == 0 or h == w):
            out[i] = torch.rot90(x[i], k=int(quarter), dims=(-2, -1))
    return out


class BatchAutoAugment:
    """uint8 batch (B, C, H, W) and per-sample keys (B,) in, the batch through ``policy`` out.

    ``policy`` "ta_wide": one op per image with a uniform magnitude bin (TrivialAugmentWide);
    "ra": ``num_ops`` ops per image in turn at bin ``magnitude`` (RandAugment). Signed ops flip the
    magnitude's sign with probability 1/2. Interpolation "nearest" or "bilinear", zero fill.
    """

    def __init__(self, policy: str, *, interpolation: str = "nearest", num_magnitude_bins: int = 31,
                 num_ops: int = 2, magnitude: int = 9):
        if policy not in ("ta_wide", "ra"):
            raise ValueError(f"no batched policy {policy!r}; use 'ta_wide' or 'ra'")
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"batched policies resample with 'nearest' or 'bilinear', not {interpolation!r}")
        self.policy, self.interpolation = policy, interpolation
        self.num_magnitude_bins, self.num_ops, self.magnitude = num_magnitude_bins, num_ops, magnitude
        space = (v2.TrivialAugmentWide if policy == "ta_wide" else v2.RandAugment)._AUGMENTATION_SPACE
        self.names = list(space)  # torchvision's key order: its op index draws pick from this list
        self.space = space

    def magnitude_table(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ops, bins) float64 magnitudes (0 for ops without one) and (ops,) bool: signed."""
        rows, signed = [], []
        for name in self.names:
            fn, sign = self.space[name]
            values = fn(self.num_magnitude_bins, height, width)
            rows.append(torch.zeros(self.num_magnitude_bins, dtype=torch.float64) if values is None
                        else values.to(torch.float64))
            signed.append(sign)
        return torch.stack(rows), torch.tensor(signed)

    def draw(self, keys: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, rounds) op indices and signed float64 magnitudes, each row from its image's key."""
        rounds = 1 if self.policy == "ta_wide" else self.num_ops
        u = sample_uniforms(keys, POLICY_STREAM, 3 * rounds).view(len(keys), rounds, 3)
        ops = (u[..., 0] * len(self.names)).long()
        if self.policy == "ta_wide":
            bins = (u[..., 1] * self.num_magnitude_bins).long()
        else:
            bins = torch.full_like(ops, self.magnitude)
        table, signed = self.magnitude_table(height, width)
        mags = table[ops, bins]
        return ops, torch.where(signed[ops] & (u[..., 2] < 0.5), -mags, mags)

    def apply(self, x: torch.Tensor, ops: torch.Tensor, mags: torch.Tensor) -> torch.Tensor:
        """``x`` with image i through op ``names[ops[i]]`` at magnitude ``mags[i]``, grouped by op."""
        out = x.clone()
        geo = [i for i, o in enumerate(ops.tolist()) if self.names[o] in GEOMETRIC]
        if geo:
            idx = torch.tensor(geo)
            out[idx] = _geometric_ops(x[idx], [self.names[o] for o in ops[idx].tolist()], mags[idx].tolist(),
                                      self.interpolation)
        for o in torch.unique(ops).tolist():
            name = self.names[o]
            if name == "Identity" or name in GEOMETRIC:
                continue
            idx = torch.nonzero(ops == o).flatten()
            out[idx] = _color_op(x[idx], name, mags[idx])
        return out

    def __call__(self, images: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        ops, mags = self.draw(keys, *images.shape[-2:])
        for r in range(ops.shape[1]):
            images = self.apply(images, ops[:, r], mags[:, r])
        return images


def batch_policy_for(transform) -> BatchAutoAugment | None:
    """The batched equivalent of a v2 TrivialAugmentWide or RandAugment (default fill); else None."""
    if type(transform) not in (v2.TrivialAugmentWide, v2.RandAugment):
        return None
    mode = {v2.InterpolationMode.NEAREST: "nearest", v2.InterpolationMode.BILINEAR: "bilinear"}.get(
        transform.interpolation)
    if mode is None or transform.fill is not None:  # a fill blends a mask in v2: not reproduced here
        return None
    if type(transform) is v2.TrivialAugmentWide:
        return BatchAutoAugment("ta_wide", interpolation=mode,
                                num_magnitude_bins=transform.num_magnitude_bins)
    return BatchAutoAugment("ra", interpolation=mode, num_magnitude_bins=transform.num_magnitude_bins,
                            num_ops=transform.num_ops, magnitude=transform.magnitude)
