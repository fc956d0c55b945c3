"""Test-time augmentation: the views, fastai's blend, determinism, and test_tta reported apart."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torchvision.transforms import v2

from conftest import tensor_bundle
from sotakit.data import make_loaders, make_train_transform
from sotakit.evaluate import evaluate, evaluate_tta, parse_tta, tta_probabilities


class LeftRight(nn.Module):
    """Logits from the left and right halves' mean brightness: a flip swaps them."""

    def forward(self, x):
        w = x.shape[-1] // 2
        left, right = x[..., :w].mean(dim=(1, 2, 3)), x[..., w:].mean(dim=(1, 2, 3))
        # The class offsets break the exact ties a flip average makes (p0 = p1): topk and argmax may
        # order tied classes differently, and accuracy must not depend on that.
        return torch.stack([left, right, left - right, right - left], dim=1) * 3 + torch.tensor(
            [0.0, 0.013, 0.029, 0.041])


def _test_loader(batch_size=8):
    loaders = make_loaders(tensor_bundle(n=40, classes=4, size=12, test=20), batch_size=batch_size,
                           train_crop_size=12, val_resize_size=12, val_crop_size=12)
    return loaders.test


def _plain_and_flipped(loader):
    x, y = zip(*loader)
    x, y = torch.cat(x), torch.cat(y)
    model = LeftRight()
    return model(x).softmax(1), model(x.flip(-1)).softmax(1), y


def test_flip_averages_the_plain_and_the_mirrored_view():
    loader = _test_loader()
    plain, mirrored, y = _plain_and_flipped(loader)
    probs, targets = tta_probabilities(LeftRight(), loader, tta="flip")
    assert torch.equal(targets, y)
    assert torch.allclose(probs, (plain + mirrored) / 2, atol=1e-6)


def test_n_passes_are_averaged_then_blended_with_the_plain_view_by_beta():
    loader = _test_loader()
    plain, mirrored, _ = _plain_and_flipped(loader)
    always_flip = v2.Compose([v2.ToImage(), v2.RandomHorizontalFlip(p=1.0), v2.ToPureTensor()])
    probs, _ = tta_probabilities(LeftRight(), loader, tta=3, beta=0.25, train_transform=always_flip)
    assert torch.allclose(probs, 0.75 * mirrored + 0.25 * plain, atol=1e-6)
    probs, _ = tta_probabilities(LeftRight(), loader, tta=3, beta=1.0, train_transform=always_flip)
    assert torch.allclose(probs, plain, atol=1e-6)


def test_augmented_views_repeat_for_a_seed_whatever_the_batch_size():
    crop = make_train_transform(crop_size=12, crop_min_scale=0.3)
    a, _ = tta_probabilities(LeftRight(), _test_loader(8), tta=2, train_transform=crop, seed=3)
    b, _ = tta_probabilities(LeftRight(), _test_loader(5), tta=2, train_transform=crop, seed=3)
    c, _ = tta_probabilities(LeftRight(), _test_loader(8), tta=2, train_transform=crop, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_metrics_are_those_of_the_blended_probabilities_and_the_plain_figure_is_untouched():
    loader = _test_loader()
    plain, mirrored, y = _plain_and_flipped(loader)
    blended = (plain + mirrored) / 2
    out = evaluate_tta(LeftRight(), loader, tta="flip")
    assert out["n"] == 20 and out["tta"] == "plain + horizontal flip"
    assert out["acc1"] == pytest.approx(100 * (blended.argmax(1) == y).float().mean().item())
    assert out["loss"] == pytest.approx(nn.functional.nll_loss(blended.log(), y).item(), rel=1e-5)
    assert evaluate(LeftRight(), loader)["acc1"] == pytest.approx(100 * (plain.argmax(1) == y).float().mean())


def test_parse_tta_names_what_it_takes():
    assert (parse_tta(""), parse_tta("flip"), parse_tta("4")) == (None, "flip", 4)
    with pytest.raises(ValueError, match="a number of augmented passes \\(e.g. 4\\) or 'flip', got 'x'"):
        parse_tta("x")


@pytest.mark.slow  # a tiny fit() and an eval
def test_final_report_and_eval_give_test_tta_beside_the_plain_test(image_folder, tmp_path, capsys,
                                                                   one_thread):
    from conftest import tiny_recipe
    from sotakit.train import fit
    from sotakit.train.evaluate_run import evaluate_checkpoint

    res = fit(tiny_recipe(image_folder, tmp_path, epochs=1, tta="2"), verbose=False)
    s = res.summary
    assert s["test_tta"]["tta"] == "2 augmented + plain, beta 0.25" and s["test_tta"]["n"] == s["test"]["n"]
    out = evaluate_checkpoint(res.run_dir, tta="flip")
    assert out["test"]["acc1"] == pytest.approx(s["test"]["acc1"])  # the plain figure is not mixed
    assert out["test_tta"]["tta"] == "plain + horizontal flip"
    again = evaluate_checkpoint(res.run_dir)  # the recipe's own TTA, deterministic for its seed
    assert again["test_tta"] == s["test_tta"]
    from sotakit.cli import main
    assert main(["eval", str(res.run_dir), "--json", "--tta", "--tta-beta", "0.5"]) == 0  # --tta: 4 passes
    doc = json.loads(capsys.readouterr().out)
    assert doc["test_tta"]["tta"] == "4 augmented + plain, beta 0.5" and doc["test"] == out["test"]
