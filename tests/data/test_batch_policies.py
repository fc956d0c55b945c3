"""Batched TrivialAugmentWide / RandAugment / random erasing: each op equals torchvision's per image, the
draws follow torchvision's distributions (chi-square and KS tests at fixed seeds), a key repeats exactly,
and a resumed epoch on in-memory data sees the same augmented batches."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from scipy import stats
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from conftest import tensor_bundle
from sotakit.data import make_loaders, set_data_epoch
from sotakit.data.batch_augment import BatchErasing, erase_boxes
from sotakit.data.batch_autoaugment import BatchAutoAugment
from sotakit.data.samplers import sample_uniforms

POLICIES = {"ta_wide": v2.TrivialAugmentWide, "ra": v2.RandAugment}
MODES = {"nearest": v2.InterpolationMode.NEAREST, "bilinear": v2.InterpolationMode.BILINEAR}


def images(n, c, h, w, seed=0):
    """Random pixels, the first quarter with few grey levels (equalize, posterize and autocontrast
    act differently on them)."""
    x = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    x[: n // 4] = x[: n // 4] // 64 * 64 + 32
    return x


def test_sample_uniforms_is_splitmix64_of_key_and_counter():
    """Pins the formula (a change would change every run's augmentations) against plain Python."""
    mask = (1 << 64) - 1

    def splitmix(key, stream, j):
        z = (key + ((stream << 32) + j + 1) * 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return (z ^ (z >> 31)) >> 11

    keys = [0, 1, 12345, 2**62 + 7, 2**63 - 1]
    u = sample_uniforms(torch.tensor(keys), 3, 4)
    assert u.tolist() == [[splitmix(k, 3, j) / 2**53 for j in range(4)] for k in keys]


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("shape", [(1, 12, 12), (3, 12, 12), (3, 10, 14)], ids=["gray", "rgb", "rgb-wide"])
def test_each_op_equals_torchvision_per_image(policy, mode, shape):
    """Exact, uint8 for uint8: every other magnitude bin (0, 2, ..., 30) with random signs, one image each,
    in one batch."""
    batch = BatchAutoAugment(policy, interpolation=mode)
    ref = POLICIES[policy](interpolation=MODES[mode])
    c, h, w = shape
    x = images(16, c, h, w)
    table, signed = batch.magnitude_table(h, w)
    g = torch.Generator().manual_seed(1)
    for o, name in enumerate(batch.names):
        mags = table[o, ::2]
        if signed[o]:
            mags = torch.where(torch.rand(16, generator=g) < 0.5, -mags, mags)
        out = batch.apply(x, torch.full((16,), o), mags)
        expected = torch.stack([ref._apply_image_or_video_transform(img, name, float(m), ref.interpolation,
                                                                     ref._fill) for img, m in zip(x, mags)])
        assert out.dtype == torch.uint8
        assert torch.equal(out, expected), f"{name}: {(out != expected).sum().item()} pixels differ"


def test_mixed_ops_in_one_batch_each_equal_torchvision():
    """Every image its own op and magnitude, as a real batch draws them."""
    batch = BatchAutoAugment("ta_wide", interpolation="bilinear")
    ref = v2.TrivialAugmentWide(interpolation=v2.InterpolationMode.BILINEAR)
    x = images(64, 3, 12, 12)
    ops, mags = batch.draw(torch.arange(64) * 7919, 12, 12)
    out = batch(x, torch.arange(64) * 7919)
    for i in range(64):
        one = ref._apply_image_or_video_transform(x[i], batch.names[ops[i, 0]], float(mags[i, 0]),
                                                  ref.interpolation, ref._fill)
        assert torch.equal(out[i], one), (i, batch.names[ops[i, 0]])


def torchvision_draws(policy: str, n: int, size: int = 8) -> list[list[tuple[str, float]]]:
    """The (op, magnitude) list torchvision's policy applies to each of ``n`` calls, recorded."""
    t = POLICIES[policy]()
    calls, current = [], []
    t._apply_image_or_video_transform = lambda img, name, mag, **kw: current.append((name, mag)) or img
    torch.manual_seed(0)
    img = torch.zeros(1, size, size, dtype=torch.uint8)
    for _ in range(n):
        current = []
        t(img)
        calls.append(current)
    return calls


def our_draws(policy: str, n: int, size: int = 8) -> list[list[tuple[str, float]]]:
    b = BatchAutoAugment(policy)
    keys = torch.randint(0, 2**62, (n,), generator=torch.Generator().manual_seed(1))
    ops, mags = b.draw(keys, size, size)
    return [[(b.names[o], m) for o, m in zip(row_o, row_m)]
            for row_o, row_m in zip(ops.tolist(), mags.tolist())]


def same_distribution(ours: list, theirs: list, expected: dict | None = None) -> None:
    """Chi-square: the two samples' category counts alike (contingency), and each like ``expected``."""
    cats = sorted(set(ours) | set(theirs), key=str)
    a, b = Counter(ours), Counter(theirs)
    table = [[a[k] for k in cats], [b[k] for k in cats]]
    assert stats.chi2_contingency(table).pvalue > 1e-3, table
    if expected is not None:
        for sample in (a, b):
            n = sum(sample.values())
            p = stats.chisquare([sample[k] for k in expected], [expected[k] * n for k in expected]).pvalue
            assert p > 1e-3, (sample, expected)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_op_and_magnitude_distributions_match_torchvision(policy):
    """Op frequencies uniform over torchvision's op table; TrivialAugment's magnitude bin uniform over
    31, RandAugment's fixed; the sign of a signed op fair; every magnitude one torchvision can draw."""
    n = 6000 if policy == "ta_wide" else 3000  # RandAugment: 2 ops per image
    theirs, ours = torchvision_draws(policy, n), our_draws(policy, n)
    space = POLICIES[policy]._AUGMENTATION_SPACE
    assert {len(c) for c in theirs} == {len(c) for c in ours} == {1 if policy == "ta_wide" else 2}
    flat_t, flat_o = [d for c in theirs for d in c], [d for c in ours for d in c]
    same_distribution([nm for nm, _ in flat_o], [nm for nm, _ in flat_t], {k: 1 / len(space) for k in space})
    table = {nm: space[nm][0](31, 8, 8) for nm in space}
    bins_t, bins_o, signs_t, signs_o = [], [], [], []
    for flat, bins, signs in ((flat_t, bins_t, signs_t), (flat_o, bins_o, signs_o)):
        for nm, m in flat:
            if table[nm] is None:
                assert m == 0.0
                continue
            values = table[nm].tolist()
            if policy == "ra":
                assert abs(m) == values[9], (nm, m)  # RandAugment: always the magnitude bin (9)
            else:
                bins.append(values.index(abs(m)))  # bins of equal value (posterize) fold onto the first
            if space[nm][1] and m != 0:
                signs.append(m < 0)
    if policy == "ta_wide":
        same_distribution(bins_o, bins_t)
    same_distribution(signs_o, signs_t, {False: 0.5, True: 0.5})


def test_a_key_repeats_exactly_whatever_its_batch():
    b = BatchAutoAugment("ra", interpolation="nearest")
    x, keys = images(48, 3, 12, 12), torch.arange(48) + 10**12
    out = b(x, keys)
    assert torch.equal(b(x, keys), out)
    assert torch.equal(b(x[5:9].flip(0), keys[5:9].flip(0)), out[5:9].flip(0))  # other batch, other order
    assert not torch.equal(b(x, keys + 1), out)
    erase = BatchErasing(0.5)
    y = torch.ones(48, 3, 16, 16)
    assert torch.equal(erase(y.clone(), keys)[5:9], erase(y[5:9].clone(), keys[5:9]))
    assert not torch.equal(erase(y.clone(), keys), erase(y.clone(), keys + 1))


def test_erase_boxes_follow_torchvision_random_erasing():
    """KS tests on each box side and position against v2.RandomErasing's draws; the erased fraction is
    p times the chance a box fits."""
    n, size = 4000, 16
    ref = v2.RandomErasing(p=1.0)
    torch.manual_seed(0)
    img = torch.zeros(3, size, size)
    theirs = torch.tensor([[p["i"], p["j"], p["h"], p["w"]] if p["v"] is not None else [0, 0, 0, 0]
                           for p in (ref.make_params([img]) for _ in range(n))], dtype=torch.float)
    ours = erase_boxes(torch.randint(0, 2**62, (n,), generator=torch.Generator().manual_seed(2)),
                       size, size, p=1.0).float()
    for col in range(4):
        assert stats.ks_2samp(ours[:, col], theirs[:, col]).pvalue > 1e-3, col
    top, left, h, w = ours.T
    assert ((top + h <= size) & (left + w <= size) & (h < size) & (w < size)).all()
    half = erase_boxes(torch.arange(n), size, size, p=0.5)
    fits = (ours[:, 2] > 0).float().mean()
    assert abs((half[:, 2] > 0).float().mean() - 0.5 * fits) < 0.03


def test_batched_erasing_is_torchvision_erase_at_the_drawn_boxes():
    x = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    keys = torch.arange(32) * 31
    out = BatchErasing(0.7)(x.clone(), keys)
    for img, got, (i, j, h, w) in zip(x, out, erase_boxes(keys, 16, 16, 0.7).tolist()):
        expected = F.erase(img, i, j, h, w, torch.zeros(3, 1, 1)) if h else img
        assert torch.equal(got, expected)


def test_resumed_epoch_repeats_the_batched_ta_wide_batches():
    """ta_wide + erasing on in-memory data (the batch path): skipping 2 batches of epoch 1 gives exactly
    the uninterrupted epoch's remaining batches."""
    kw = dict(batch_size=8, train_crop_size=12, val_resize_size=12, val_crop_size=12, auto_augment="ta_wide",
              random_erase=0.5, seed=3)

    def epoch_batches(skip):
        loaders = make_loaders(tensor_bundle(), **kw)
        assert loaders.train.collate_fn.finish.crop.augment is not None
        set_data_epoch(loaders, epoch=1, skip_batches=skip, seed=3)
        torch.manual_seed(skip)  # the global generator's state must not matter
        return [x for x, _ in loaders.train]

    full, resumed = epoch_batches(0), epoch_batches(2)
    assert len(resumed) == len(full) - 2
    assert all(torch.equal(a, b) for a, b in zip(full[2:], resumed))
