"""SFT: the two-phase triangular learning rate by hand, and that the training loop really steps with it."""

from __future__ import annotations

import pytest
import torch

from bench.core import train as train_module
from bench.core.archs import build_model
from bench.core.data import Augmentation
from bench.core.params import field_values
from bench.core.registry import create_defense
from defenses.base import DefenseContext
from defenses.sft import SFTParams

HAND = SFTParams(lr_base=0.01, lr_max1=1.0, lr_max2=0.1, cycle_iterations=4, phase1_fraction=0.5)


@pytest.mark.parametrize(
    "t, expected",
    [
        (0, 0.01),  # every cycle starts at the base
        (1, 0.505),  # halfway up: base + (max1 − base)/2
        (2, 1.0),  # the peak of a phase-1 cycle
        (3, 0.505),
        (4, 0.01),
        (7, 0.505),
        (8, 0.01),  # phase 2 starts at t = 0.5 · 16
        (9, 0.055),  # base + (max2 − base)/2
        (10, 0.1),  # the peak of a phase-2 cycle
        (15, 0.055),
    ],
)
def test_lr_at_chosen_iterations(t, expected):
    assert HAND.lr(t, total=16) == pytest.approx(expected)


def test_odd_cycles_rise_and_fall_linearly():
    p = SFTParams(lr_base=0.1, lr_max1=1.0, cycle_iterations=5, phase1_fraction=1.0)
    assert [p.lr(t, 10) for t in range(6)] == pytest.approx([0.1, 0.46, 0.82, 0.82, 0.46, 0.1])


@pytest.fixture
def spec(make_spec):
    return make_spec(channels=3, size=8, num_classes=10, augmentation=Augmentation(crop_padding=1, flip=True))


def test_the_loop_steps_at_the_scheduled_lr(spec, make_imageset, monkeypatch):
    """Record the lr of every optimiser step: 3 epochs × ⌈20 / 8⌉ = 9 steps, each at lr(t, 9)."""
    used: list[float] = []
    real_sgd = train_module.sgd

    def spying_sgd(model, cfg, params=None):
        optimizer = real_sgd(model, cfg, params)
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
        return optimizer

    monkeypatch.setattr(train_module, "sgd", spying_sgd)
    params = SFTParams(epochs=3, batch_size=8, lr_base=0.001, lr_max1=0.05, lr_max2=0.01, cycle_iterations=4, phase1_fraction=0.5)
    model = build_model("small_cnn", spec)
    clean = make_imageset(n=20, channels=3, size=8, num_classes=10, seed=1)
    ctx = DefenseContext(spec=spec, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    out = create_defense("sft", **field_values(params)).run(model, clean, ctx)
    assert used == pytest.approx([params.lr(t, 9) for t in range(9)])
    assert used[:5] == pytest.approx([0.001, 0.0255, 0.05, 0.0255, 0.001])  # phase 1: t < 4.5
    assert used[5:] == pytest.approx([0.0055, 0.01, 0.0055, 0.001])
    assert len(out.epoch_losses) == 3


def test_fine_tunes_every_weight(spec, make_imageset):
    model = build_model("small_cnn", spec)
    clean = make_imageset(n=20, channels=3, size=8, num_classes=10, seed=1)
    ctx = DefenseContext(spec=spec, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    out = create_defense("sft", epochs=1, batch_size=10).run(model, clean, ctx).model
    before, after = dict(model.named_parameters()), dict(out.named_parameters())
    assert all(not torch.equal(before[k], after[k]) for k in before)

