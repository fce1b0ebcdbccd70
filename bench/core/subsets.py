"""The defender's clean data: a class-balanced subset of the clean training set."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.core.counts import fraction_count


def clean_subset_size(fraction: float, n: int) -> int:
    """``fraction * n`` rounded half up (``fraction_count``), at least 1; ``fraction`` in (0, 1]."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"clean fraction must be in (0, 1], got {fraction}")
    return max(1, fraction_count(fraction, n))


def class_balanced_index(y: Tensor, count: int, gen: torch.Generator) -> Tensor:
    """Sorted indices of ``count`` samples, as even over the classes of ``y`` as the classes allow.

    Samples are shuffled with ``gen``, ranked within their class, and taken by rank
    (every class's first, then every class's second, ...), ties in shuffled order.
    """
    y = y.cpu()
    order = torch.randperm(len(y), generator=gen)
    shuffled = y[order]
    rank = torch.empty(len(y), dtype=torch.int64)
    for cls in shuffled.unique():
        members = torch.nonzero(shuffled == cls).flatten()
        rank[members] = torch.arange(len(members))
    by_rank = torch.argsort(rank * len(y) + torch.arange(len(y)))
    return order[by_rank[:count]].sort().values
