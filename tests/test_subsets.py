"""The defender's clean subset: its size rule and class balance."""

from __future__ import annotations

import math

import pytest
import torch

from bench.core.subsets import class_balanced_index, clean_subset_size


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("fraction", "n", "size"),
    [
        (0.05, 1438, 72),  # 71.9
        (0.01, 1438, 14),  # 14.38
        (0.05, 50000, 2500),
        (1.0, 1438, 1438),
        (0.5, 3, 2),  # 1.5 rounds half up
        (0.0001, 1438, 1),  # 0.14 rounds to 0; at least one sample
    ],
)
def test_clean_subset_size_by_hand(fraction, n, size):
    assert clean_subset_size(fraction, n) == size


def test_clean_subset_size_rounds_decimal_ties_half_up():
    assert clean_subset_size(0.145, 100) == 15


@pytest.mark.parametrize("fraction", [0.0, -0.05, 1.5, math.nan])
def test_clean_subset_size_rejects_fraction_outside_0_1(fraction):
    with pytest.raises(ValueError, match="fraction"):
        clean_subset_size(fraction, 1000)


def shuffled_labels(counts: list[int], seed: int = 0) -> torch.Tensor:
    y = torch.cat([torch.full((c,), k, dtype=torch.int64) for k, c in enumerate(counts)])
    return y[torch.randperm(len(y), generator=gen(seed))]


@pytest.mark.parametrize("count", [1, 7, 10, 25, 31, 100])
def test_class_balanced_index_is_balanced_sorted_unique(count):
    y = shuffled_labels([12, 15, 10, 20, 11, 13, 10, 18, 10, 14])
    index = class_balanced_index(y, count, gen(0))
    assert len(index) == count
    assert (index[1:] > index[:-1]).all(), "sorted and unique"
    per_class = torch.bincount(y[index], minlength=10)
    assert int(per_class.max() - per_class.min()) <= 1


def test_class_balanced_index_takes_all_of_a_small_class_then_evens_the_rest():
    y = shuffled_labels([1, 50, 50])
    index = class_balanced_index(y, 31, gen(0))
    assert torch.bincount(y[index], minlength=3).tolist() == [1, 15, 15]


def test_class_balanced_index_of_everything_is_every_index():
    y = shuffled_labels([3, 5, 2])
    assert torch.equal(class_balanced_index(y, 10, gen(0)), torch.arange(10))


def test_class_balanced_index_is_deterministic_per_seed():
    y = shuffled_labels([30] * 10)
    a = class_balanced_index(y, 20, gen(5))
    b = class_balanced_index(y, 20, gen(5))
    c = class_balanced_index(y, 20, gen(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_class_balanced_index_does_not_prefer_early_samples():
    """Within a class the members are drawn at random, not the first ones in storage order."""
    y = torch.arange(1000, dtype=torch.int64) % 10  # 100 per class
    index = class_balanced_index(y, 50, gen(0))
    assert int(index.max()) > 500
