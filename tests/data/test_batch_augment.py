"""The batched random-resized crop draws boxes as torchvision does and crops what the box says."""

from __future__ import annotations

import math

import torch
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as F

from sotakit.data.batch_augment import BatchCropFlip, resized_crops, sample_crop_boxes


def test_boxes_follow_the_torchvision_distribution():
    g = torch.Generator().manual_seed(0)
    ours = sample_crop_boxes(20000, 28, 28, scale=(0.35, 1.0), generator=g)
    torch.manual_seed(0)
    ref = torch.tensor([RandomResizedCrop.get_params(torch.zeros(1, 28, 28), (0.35, 1.0), (3 / 4, 4 / 3))
                        for _ in range(20000)], dtype=torch.float)
    for col in range(4):  # top, left, h, w: same means and spreads
        assert abs(ours[:, col].mean() - ref[:, col].mean()) < 0.15
        assert abs(ours[:, col].std() - ref[:, col].std()) < 0.15
    top, left, h, w = ours.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 28).all() and (left + w <= 28).all()
    area = h * w / 784
    assert area.min() >= 0.35 * 0.9 and area.max() <= 1.0


def test_fallback_is_the_center_crop_with_clamped_ratio():
    # a 10x40 image with scale (0.9, 1) and ratio (1, 1): no square fits, so the center 10x10 is used
    b = sample_crop_boxes(5, 10, 40, scale=(0.9, 1.0), ratio=(1.0, 1.0))
    assert b.tolist() == [[0.0, 15.0, 10.0, 10.0]] * 5


def test_crop_is_the_box_resampled():
    # random pixels, not a ramp: a blur (averaging neighbours) leaves a linear ramp unchanged
    img = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[1.0, 2.0, 4.0, 4.0], [0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 8.0, 8.0]])
    out = resized_crops(img, boxes, 4)
    torch.testing.assert_close(out[0], img[0, :, 1:5, 2:6].float())  # same size: the exact pixels
    torch.testing.assert_close(resized_crops(img[2:], boxes[2:], 8)[0], img[2].float())  # full box: identity
    # enlarging matches torchvision's bilinear resize of the crop, away from the border (where
    # roi_align reads the real neighbouring pixels and a crop-then-resize repeats the edge)
    up = resized_crops(img[:1], torch.tensor([[2.0, 2.0, 4.0, 4.0]]), 8)[0]
    ref = F.resize(img[0, :, 2:6, 2:6].float(), [8, 8], antialias=True)
    torch.testing.assert_close(up[:, 1:7, 1:7], ref[:, 1:7, 1:7], atol=1e-3, rtol=0)
    # 2x downscale: each output pixel is the mean of its 2x2 block (a box filter; torchvision's
    # antialiased resize uses a wider triangle filter)
    torch.testing.assert_close(out[1], torch.nn.functional.avg_pool2d(img[1].float(), 2), atol=1e-4, rtol=0)


def test_flip_probability():
    torch.manual_seed(0)
    img = torch.zeros(400, 1, 4, 4, dtype=torch.uint8)
    img[..., 0] = 255  # left column white
    out = BatchCropFlip(4, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_prob=0.5)(img)
    flipped = (out[:, 0, 0, 3] > 200).float().mean().item()
    assert math.isclose(flipped, 0.5, abs_tol=0.08)
