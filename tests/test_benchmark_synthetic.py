"""The benchmark-only synthetic 32×32 RGB dataset: deterministic, well-formed, balanced."""

from __future__ import annotations

import pytest
import torch

from benchmarks.synthetic import synthetic32


def test_same_seed_gives_identical_tensors():
    a, b = synthetic32(seed=3, n_train=100, n_test=50), synthetic32(seed=3, n_train=100, n_test=50)
    for left, right in ((a.train, b.train), (a.test, b.test)):
        assert torch.equal(left.x, right.x) and torch.equal(left.y, right.y)
    assert a.spec == b.spec


def test_different_seed_gives_different_images():
    a, b = synthetic32(seed=0, n_train=100, n_test=50), synthetic32(seed=1, n_train=100, n_test=50)
    assert not torch.equal(a.train.x, b.train.x)
    assert not torch.equal(a.test.x, b.test.x)


def test_shapes_dtypes_ranges_and_spec():
    data = synthetic32(seed=0, n_train=200, n_test=50)
    assert data.train.x.shape == (200, 3, 32, 32) and data.test.x.shape == (50, 3, 32, 32)
    assert data.train.x.dtype == torch.uint8 and data.train.y.dtype == torch.int64
    assert 0 <= int(data.train.y.min()) and int(data.train.y.max()) < 10
    assert data.train.x.float().std() > 10  # images, not a constant
    spec = data.spec
    assert (spec.name, spec.channels, spec.size, spec.num_classes) == ("synthetic32", 3, 32, 10)
    assert len(spec.mean) == len(spec.std) == 3
    assert all(0 < m < 1 for m in spec.mean) and all(0 < s < 1 for s in spec.std)
    assert (spec.augmentation.crop_padding, spec.augmentation.flip) == (4, True)


def test_classes_are_balanced_and_match_train_class_counts():
    data = synthetic32(seed=0, n_train=200, n_test=50)
    counts = torch.bincount(data.train.y, minlength=10)
    assert tuple(counts.tolist()) == data.spec.train_class_counts == (20,) * 10
    assert torch.bincount(data.test.y, minlength=10).tolist() == [5] * 10


def test_sizes_must_be_multiples_of_the_class_count():
    with pytest.raises(ValueError):
        synthetic32(n_train=105)


def test_class_count_is_a_parameter_with_balanced_classes():
    data = synthetic32(seed=0, n_train=400, n_test=80, num_classes=40)
    assert data.spec.num_classes == 40
    assert tuple(torch.bincount(data.train.y, minlength=40).tolist()) == data.spec.train_class_counts == (10,) * 40
    assert int(data.test.y.max()) == 39


@pytest.mark.parametrize("kwargs", [{"num_classes": 2}, {"num_classes": 40, "n_train": 100}])
def test_bad_class_count_or_size_is_refused(kwargs):
    with pytest.raises(ValueError, match="num_classes|multiples"):
        synthetic32(seed=0, **kwargs)


def test_noise_std_sets_the_white_pixel_noise():
    noisy, quiet = synthetic32(seed=0, n_train=100, n_test=50), synthetic32(seed=0, n_train=100, n_test=50, noise_std=0.0)
    assert torch.equal(noisy.train.y, quiet.train.y)
    difference = noisy.train.x.float() - quiet.train.x.float()
    assert 4.0 < float(difference.std()) < 6.0  # 0.02 · 255 ≈ 5.1 (before clamping)
    with pytest.raises(ValueError, match="noise_std"):
        synthetic32(seed=0, n_train=100, n_test=50, noise_std=-0.1)
