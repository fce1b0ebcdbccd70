"""The shared training loop: reproducible under dropout, global generators left as they were; hooks in order;
the learning rate of every step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.core.data import Augmentation
from bench.core.learning_rate import constant, cosine_per_epoch, cosine_per_step, per_epoch
from bench.core.train import GradientStep, TrainConfig, TrainingHooks, epochs_covering, steps_per_epoch, train


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


# ---------------------------------------------------------------- hooks and the per-step learning rate


class Recorder(TrainingHooks):
    """Hooks that log every call in order and mark the batches they hand on."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_epoch(self, epoch):
        self.calls.append(("epoch", epoch))

    def poison_batch(self, x, y):
        self.calls.append(("poison", len(x)))
        return x * 0.5, torch.zeros_like(y)

    def post_trigger(self, x):
        self.calls.append(("post", len(x)))
        return x + 0.25

    def loss(self, model, x, y):
        transformed = bool((x >= 0.25).all() and (x <= 0.75).all() and (y == 0).all())  # x / 2 + 1/4, labels 0
        self.calls.append(("loss", transformed))
        return super().loss(model, x, y)

    def after_step(self, step):
        self.calls.append(("after", step))


class LrLog:
    """An update that records the learning rate and the batch it is handed, then steps plain SGD."""

    def __init__(self, model: nn.Module, lr: float) -> None:
        self.inner = GradientStep(torch.optim.SGD(model.parameters(), lr=lr))
        self.optimizer = self.inner.optimizer
        self.lrs: list[float] = []

    def __call__(self, x, y, loss):
        self.lrs.append(self.optimizer.param_groups[0]["lr"])
        return self.inner(x, y, loss)


def linear() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))


def test_the_loop_calls_each_hook_in_order_on_the_batch_the_previous_one_gave(make_imageset):
    data = make_imageset(n=10)  # batch 4: 3 steps an epoch (4, 4, 2)
    hooks = Recorder()
    train(linear(), data, TrainConfig(epochs=2, batch_size=4, lr=0.1), Augmentation(), torch.Generator().manual_seed(0), hooks=hooks)
    per_batch = lambda n, step: [("poison", n), ("post", n), ("loss", True), ("after", step)]  # noqa: E731
    expected = [("epoch", 0), *per_batch(4, 0), *per_batch(4, 1), *per_batch(2, 2),
                ("epoch", 1), *per_batch(4, 3), *per_batch(4, 4), *per_batch(2, 5)]
    assert hooks.calls == expected


def test_the_epoch_cosine_schedule_gives_torchs_learning_rates_to_the_last_bit(make_imageset):
    """One value per epoch, the same for each of its steps, equal to CosineAnnealingLR stepped per epoch."""
    data, cfg = make_imageset(n=12), TrainConfig(epochs=7, batch_size=5, lr=0.03)  # 3 steps an epoch
    model = linear()
    update = LrLog(model, cfg.lr)
    train(model, data, cfg, Augmentation(), torch.Generator().manual_seed(0), update)
    reference = torch.optim.SGD(linear().parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=cfg.epochs)
    expected = []
    for _ in range(cfg.epochs):
        expected += [reference.param_groups[0]["lr"]] * 3
        reference.step()
        scheduler.step()
    assert update.lrs == expected  # exact, not approximate


@pytest.mark.parametrize("epochs", [1, 2, 3, 15, 100, 250])
def test_cosine_per_epoch_is_torchs_recurrence(epochs):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    expected = []
    for _ in range(epochs):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert cosine_per_epoch(0.05, epochs) == expected


def test_a_per_step_schedule_is_set_before_every_step(make_imageset):
    data, cfg = make_imageset(n=10), TrainConfig(epochs=2, batch_size=4, lr=0.1, schedule="constant")
    model = linear()
    update = LrLog(model, cfg.lr)
    train(model, data, cfg, Augmentation(), torch.Generator().manual_seed(0), update, lr=lambda step: 0.01 * (step + 1))
    assert update.lrs == pytest.approx([0.01 * (t + 1) for t in range(6)])


def test_schedules():
    assert [constant(0.3)(t) for t in (0, 5, 10**6)] == [0.3, 0.3, 0.3]
    assert [per_epoch([1.0, 0.5], 2)(t) for t in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.5, 0.5]
    decay = cosine_per_step(0.05, 0.02, 11)
    assert (decay(0), decay(5), decay(10)) == pytest.approx((0.05, 0.035, 0.02))
    assert cosine_per_step(0.05, 0.02, 1)(0) == 0.05


def test_step_counts():
    assert [steps_per_epoch(n, 8) for n in (1, 8, 9, 20, 0)] == [1, 1, 2, 3, 1]
    assert epochs_covering(10, 20, 8) == 4  # 3 batches an epoch
    assert epochs_covering(9, 20, 8) == 3
    assert epochs_covering(5, 20, 128) == 5  # the whole set is one batch
    with pytest.raises(ValueError, match="empty"):
        epochs_covering(5, 0, 128)
