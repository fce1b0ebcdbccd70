"""``benchmarks/margins.py``: the clean margin, the trigger's boost and drop, and the ASR per margin band."""

from __future__ import annotations

import pytest
import torch

from benchmarks.margins import margin_bands

# Four images, three classes, backdoor label 0; true labels 1, 2, 1, 2.
CLEAN = torch.tensor([[0.0, 5.0, 1.0], [1.0, 2.0, 9.0], [0.0, 1.0, 0.5], [2.0, 0.0, 4.0]])
TRIGGERED = torch.tensor([[6.0, 4.0, 1.0], [5.0, 1.0, 8.0], [3.0, 1.0, 0.5], [5.0, 0.0, 3.0]])
Y_TRUE = torch.tensor([1, 2, 1, 2])
Y_TARGET = torch.zeros(4, dtype=torch.int64)


def test_bands_are_ordered_by_clean_margin_with_their_boost_drop_and_asr():
    bands = margin_bands(CLEAN, TRIGGERED, Y_TRUE, Y_TARGET, bands=4)
    # margins 5, 8, 1, 2 → order: image 2 (1), image 3 (2), image 0 (5), image 1 (8)
    assert [b.margin for b in bands] == [1.0, 2.0, 5.0, 8.0]
    assert [b.boost for b in bands] == [3.0, 3.0, 6.0, 4.0]
    assert [b.drop for b in bands] == [0.0, 1.0, 1.0, 1.0]
    assert [b.asr for b in bands] == [1.0, 1.0, 1.0, 0.0]
    assert [b.count for b in bands] == [1, 1, 1, 1]


def test_two_bands_average_their_images():
    low, high = margin_bands(CLEAN, TRIGGERED, Y_TRUE, Y_TARGET, bands=2)
    assert (low.margin, low.boost, low.asr, low.count) == (1.5, 3.0, 1.0, 2)
    assert (high.margin, high.drop, high.asr, high.count) == (6.5, 1.0, 0.5, 2)


def test_mismatched_lengths_and_bad_band_counts_are_rejected():
    with pytest.raises(ValueError, match="same length"):
        margin_bands(CLEAN, TRIGGERED[:3], Y_TRUE, Y_TARGET)
    with pytest.raises(ValueError, match="bands must be >= 1"):
        margin_bands(CLEAN, TRIGGERED, Y_TRUE, Y_TARGET, bands=0)

