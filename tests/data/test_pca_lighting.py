"""PCA colour jitter (issue 12): the offset is the eigenvector combination, one draw per image."""

from __future__ import annotations

import pytest
import torch

from sotakit.data.transforms import IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, BatchFinish, PCALighting


def test_offset_is_the_eigenvector_combination():
    """offset = sum_j alpha_j * eigval_j * (column j of eigvec), the AlexNet/fb.resnet.torch formula."""
    light = PCALighting(0.1)
    alpha = torch.tensor([[1.0, 0.0, 0.0], [0.3, -2.0, 0.5]])
    vec = torch.tensor(IMAGENET_PCA_EIGVEC)
    by_hand = [sum(a[j] * IMAGENET_PCA_EIGVAL[j] * vec[:, j] for j in range(3)) for a in alpha]
    assert torch.allclose(light.offsets(alpha), torch.stack(by_hand))
    assert light.offsets(alpha)[0].tolist() == pytest.approx([0.2175 * -0.5675, 0.2175 * -0.5808,
                                                               0.2175 * -0.5836])


def test_batch_gets_one_seeded_draw_per_image_and_is_clipped():
    light = PCALighting(0.1)
    x = torch.full((4, 3, 5, 5), 0.5)
    torch.manual_seed(3)
    alpha = torch.randn(4, 3) * 0.1
    torch.manual_seed(3)
    out = light(x.clone())
    shift = out - 0.5
    assert torch.allclose(shift, light.offsets(alpha).view(4, 3, 1, 1).expand_as(shift), atol=1e-6)
    assert not torch.allclose(shift[0], shift[1])  # each image its own draw
    torch.manual_seed(0)
    big = PCALighting(100.0)(x.clone())
    assert big.min() >= 0 and big.max() <= 1 and ((big == 0) | (big == 1)).any()


def test_custom_eigen_decomposition():
    light = PCALighting(0.1, eigval=(1.0, 0.0, 0.0), eigvec=torch.eye(3).tolist())
    assert light.offsets(torch.tensor([[0.2, 5.0, 5.0]])).tolist() == [pytest.approx([0.2, 0.0, 0.0])]


def test_batch_finish_jitters_rgb_before_normalizing_and_leaves_grayscale_alone():
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    rgb = torch.full((2, 3, 4, 4), 128, dtype=torch.uint8)
    light = PCALighting(0.1)
    torch.manual_seed(1)
    alpha = torch.randn(2, 3) * 0.1
    torch.manual_seed(1)
    out = BatchFinish(mean, std, lighting=light)(rgb)
    want = (128 / 255 + light.offsets(alpha).view(2, 3, 1, 1) - 0.5) / 0.25
    assert torch.allclose(out, want.expand_as(out), atol=1e-5)
    gray = torch.full((2, 1, 4, 4), 128, dtype=torch.uint8)
    assert BatchFinish(mean, std, lighting=light)(gray).equal(BatchFinish(mean, std)(gray))


def test_pca_stats_data_jitters_along_the_training_splits_own_eigenvectors(monkeypatch, tmp_path):
    """Issue 12.2: --pca-stats data takes the eigen-decomposition `sotakit data stats` computes (cached)."""
    from conftest import tensor_bundle
    from sotakit.data import make_loaders
    from sotakit.data.stats import color_stats
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    g = torch.Generator().manual_seed(0)
    gray = torch.randint(0, 256, (40, 1, 12, 12), generator=g, dtype=torch.uint8)
    images = torch.cat([gray, gray // 2, 255 - gray], dim=1)  # correlated channels: one dominant axis
    bundle = tensor_bundle(images=images, targets=torch.arange(40) % 4)
    sizes = {"batch_size": 8, "train_crop_size": 12, "val_resize_size": 12, "val_crop_size": 12}
    eigval, eigvec = color_stats(bundle)[0].pca_parameters()
    own = make_loaders(bundle, **sizes, pca_jitter=0.1, pca_stats="data").train.collate_fn.finish.lighting
    assert torch.allclose(own.eigval, torch.tensor(eigval, dtype=torch.float32))
    assert torch.allclose(own.eigvec, torch.tensor(eigvec, dtype=torch.float32))
    assert own.eigval.tolist() != pytest.approx(list(IMAGENET_PCA_EIGVAL))
    imagenet = make_loaders(bundle, **sizes, pca_jitter=0.1).train.collate_fn.finish.lighting
    assert imagenet.eigval.tolist() == pytest.approx(list(IMAGENET_PCA_EIGVAL))
