"""Colour statistics: mean, std and covariance eigenpairs by formula, the cache, the --normalize choices."""

from __future__ import annotations

import pytest
import torch

from conftest import make_image_folder, tensor_bundle
from sotakit.data import TensorSource, color_stats, compute_color_stats, load_data, normalization, normalized


def test_stats_by_formula_and_eigenpairs_that_rebuild_the_covariance():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 4, 6), dtype=torch.uint8, generator=g)
    stats = compute_color_stats(TensorSource(images, torch.zeros(5)))
    pixels = images.double().div(255).permute(1, 0, 2, 3).reshape(3, -1)
    assert stats.pixels == 120 and stats.images == 5
    f64 = torch.float64
    assert torch.allclose(torch.tensor(stats.mean, dtype=f64), pixels.mean(dim=1))
    assert torch.allclose(torch.tensor(stats.std, dtype=f64), pixels.std(dim=1, unbiased=False))  # population
    cov = torch.cov(pixels, correction=0)
    assert torch.allclose(torch.tensor(stats.covariance, dtype=f64), cov)
    values, vectors = torch.tensor(stats.eigenvalues, dtype=f64), torch.tensor(stats.eigenvectors, dtype=f64)
    assert values[0] >= values[1] >= values[2] >= 0
    assert torch.allclose(vectors.T @ torch.diag(values) @ vectors, cov, atol=1e-12)  # rows: eigenvectors
    assert torch.allclose(vectors @ vectors.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert all(v[v.abs().argmax()] > 0 for v in vectors)


def test_grayscale_counts_as_rgb_with_one_nonzero_eigenvalue():
    images = torch.tensor([[[[0, 255]]], [[[51, 102]]]], dtype=torch.uint8)  # (2, 1, 1, 2)
    stats = compute_color_stats(TensorSource(images, torch.zeros(2)))
    values = [0.0, 1.0, 0.2, 0.4]
    mean = sum(values) / 4
    var = sum((v - mean) ** 2 for v in values) / 4
    assert stats.mean == pytest.approx((mean,) * 3) and stats.std == pytest.approx((var ** 0.5,) * 3)
    assert stats.eigenvalues == pytest.approx((3 * var, 0.0, 0.0), abs=1e-12)
    assert stats.eigenvectors[0] == pytest.approx((3 ** -0.5,) * 3)


def test_cached_by_the_data_fingerprint(tmp_path):
    bundle = tensor_bundle()
    first, cached = color_stats(bundle)
    again, cached_again = color_stats(bundle)
    assert (cached, cached_again) == (False, True) and again == first and len(first.fingerprint) == 64
    other = tensor_bundle(images=torch.full((40, 1, 12, 12), 7, dtype=torch.uint8))
    third, cached_third = color_stats(other)
    assert not cached_third and third.mean == pytest.approx((7 / 255,) * 3)


def test_folder_statistics_use_a_seeded_sample_of_at_most_max_images(tmp_path):
    bundle = load_data(str(make_image_folder(tmp_path / "imgs", per_class=(6, 2))))
    a = compute_color_stats(bundle.train, max_images=7, seed=1)
    b = compute_color_stats(bundle.train, max_images=7, seed=1)
    assert a.images == 7 and a.pixels == 7 * 32 * 32 and a == b
    # the class is in the colour: red, green and blue images give each channel a mean above a third
    whole = compute_color_stats(bundle.train)
    assert whole.images == 18 and all(m > 0.3 for m in whole.mean)


def test_normalize_choices():
    bundle = tensor_bundle()
    assert normalization(bundle, "") == ((0.5,) * 3, (0.5,) * 3)
    assert normalization(bundle, "imagenet") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert normalization(bundle, "none") == ((0.0,) * 3, (1.0,) * 3)
    measured = color_stats(bundle)[0]
    data = normalized(bundle, "data")
    assert (data.mean, data.std) == (measured.mean, measured.std) and data.train is bundle.train
    with pytest.raises(ValueError, match="use data, imagenet or none"):
        normalization(bundle, "cifar")


@pytest.mark.slow  # one pass over Fashion-MNIST's 60,000 training images (~8 s)
def test_fashion_mnist_figures_equal_the_catalog(fmnist_root):
    bundle = load_data("fashion-mnist", str(fmnist_root.parent))
    stats, _ = color_stats(bundle)
    assert stats.mean == pytest.approx(bundle.mean, abs=5e-5)
    assert stats.std == pytest.approx(bundle.std, abs=5e-5)


def test_pca_parameters_are_in_alexnet_s_layout_for_the_pca_lighting():
    from sotakit.data.transforms import PCALighting
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8, generator=g)
    stats = compute_color_stats(TensorSource(images, torch.zeros(4)))
    eigval, eigvec = stats.pca_parameters()
    v = torch.tensor(eigvec, dtype=torch.float64)
    assert torch.allclose(v @ torch.diag(torch.tensor(eigval, dtype=torch.float64)) @ v.T,
                          torch.tensor(stats.covariance, dtype=torch.float64), atol=1e-12)  # columns
    lighting = PCALighting(0.1, eigval, eigvec)
    alpha = torch.tensor([[1.0, 0.0, 0.0]])
    assert torch.allclose(lighting.offsets(alpha)[0], torch.tensor(stats.eigenvectors[0]).float() * eigval[0])
