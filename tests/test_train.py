"""The shared training loop: reproducible under dropout, global generators left as they were."""

from __future__ import annotations

import torch
from torch import nn

from bench.core.data import Augmentation
from bench.core.train import TrainConfig, train


def dropout_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.Dropout(0.5), nn.Linear(32, 10))


def test_training_with_dropout_is_reproducible_and_leaves_global_rng_alone(make_imageset):
    data = make_imageset(n=32)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.1)
    runs = []
    for _ in range(2):
        model = dropout_net()
        before = torch.get_rng_state()
        train(model, data, cfg, Augmentation(), torch.Generator().manual_seed(5))
        assert torch.equal(torch.get_rng_state(), before)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    other = dropout_net()
    train(other, data, cfg, Augmentation(), torch.Generator().manual_seed(6))
    assert not torch.equal(other.state_dict()["1.weight"], runs[0]["1.weight"])
