"""Poisoning rules: the count rule, the poison index, poisoned training sets and backdoor test sets."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attacks._generators import build as build_net
from attacks.base import Attack, AttackContext
from bench.core.data import DatasetSpec, ImageSet, LoadedDataset
from bench.core.poison import (
    PoisonRatioError,
    Target,
    backdoor_test_set,
    draw_poison_index,
    poison_count,
    poison_training_set,
    target_labels,
)
from bench.core.registry import ATTACKS, create_attack
from bench.core.train import GradientStep, TrainConfig
from bench.core.train import train as train_model


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Invert:
    """A stand-in trigger whose effect is easy to see: 255 − x."""

    def __init__(self, clean_label: bool = False) -> None:
        self.clean_label = clean_label

    def apply(self, x):
        return 255 - x

    def poison_inputs(self, x, y):
        return self.apply(x)


# ---------------------------------------------------------------- poison_count


@pytest.mark.parametrize(
    ("rho", "n", "count"),
    [
        (0.1, 1437, 144),  # 143.7
        (0.05, 1437, 72),  # 71.85
        (0.01, 1437, 14),  # 14.37
        (0.1, 1438, 144),  # 143.8: digits' training set
        (0.1, 50000, 5000),  # CIFAR-10
        (0.005, 50000, 250),
        (1.0, 1437, 1437),
        (0.5, 3, 2),  # 1.5 rounds half up
        (0.1, 5, 1),  # 0.5 rounds half up
        (0.25, 10, 3),  # 2.5 rounds half up (not to even)
    ],
)
def test_poison_count_by_hand(rho, n, count):
    assert poison_count(rho, n) == count


@pytest.mark.parametrize(("rho", "n", "count"), [(0.145, 100, 15), (0.58, 25, 15), (0.35, 90, 32)])
def test_poison_count_rounds_decimal_ties_half_up(rho, n, count):
    assert poison_count(rho, n) == count


@pytest.mark.parametrize("rho", [0.0, -0.1, 1.0001, 2.0, math.nan])
def test_poison_count_rejects_ratio_outside_0_1(rho):
    with pytest.raises(PoisonRatioError, match="ratio"):
        poison_count(rho, 1000)


@pytest.mark.parametrize(("rho", "n"), [(0.001, 100), (0.004, 100), (0.1, 4), (0.5, 0)])
def test_poison_count_rejects_a_ratio_that_poisons_nothing(rho, n):
    with pytest.raises(PoisonRatioError, match="no sample"):
        poison_count(rho, n)


def test_poison_ratio_error_is_a_value_error():
    assert issubclass(PoisonRatioError, ValueError)


# ---------------------------------------------------------------- draw_poison_index

LABELS = torch.arange(200, dtype=torch.int64) % 10  # 20 per class


def test_dirty_label_index_has_the_count_sorted_unique_in_range():
    index = draw_poison_index(LABELS, 0.1, Target(), clean_label=False, gen=gen(0))
    assert index.dtype == torch.int64
    assert len(index) == 20
    assert (index[1:] > index[:-1]).all(), "sorted and unique"
    assert 0 <= int(index.min()) and int(index.max()) < len(LABELS)


def test_dirty_label_index_is_deterministic_per_generator_seed():
    a = draw_poison_index(LABELS, 0.1, Target(), False, gen(7))
    b = draw_poison_index(LABELS, 0.1, Target(), False, gen(7))
    c = draw_poison_index(LABELS, 0.1, Target(), False, gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_dirty_label_index_draws_from_all_classes_target_included():
    index = draw_poison_index(LABELS, 0.5, Target("all2one", 0), False, gen(0))
    assert set(LABELS[index].tolist()) == set(range(10))
    assert torch.equal(draw_poison_index(LABELS, 1.0, Target(), False, gen(0)), torch.arange(200))


def test_clean_label_index_draws_only_from_the_target_class():
    target = Target("all2one", 3)
    index = draw_poison_index(LABELS, 0.05, target, clean_label=True, gen=gen(0))  # 10 of the 20 threes
    assert len(index) == 10
    assert (LABELS[index] == 3).all()
    assert (index[1:] > index[:-1]).all()
    everything = draw_poison_index(LABELS, 0.1, target, clean_label=True, gen=gen(0))  # all 20 threes
    assert torch.equal(everything, torch.nonzero(LABELS == 3).flatten())


def test_clean_label_index_raises_when_the_target_class_is_too_small():
    with pytest.raises(PoisonRatioError, match="target class 3"):
        draw_poison_index(LABELS, 0.105, Target("all2one", 3), clean_label=True, gen=gen(0))  # 21 > 20


def test_clean_label_index_raises_for_all2all():
    with pytest.raises(PoisonRatioError, match="all2one"):
        draw_poison_index(LABELS, 0.05, Target("all2all"), clean_label=True, gen=gen(0))


# ---------------------------------------------------------------- poison_training_set


@pytest.fixture
def train(make_imageset) -> ImageSet:
    return make_imageset(n=20, channels=3, size=8, num_classes=10, seed=3)


def test_poisoning_changes_only_the_indexed_rows_all2one(train):
    x0, y0 = train.x.clone(), train.y.clone()
    index = torch.tensor([1, 4, 5, 17])
    rest = torch.tensor([i for i in range(20) if i not in index.tolist()])
    out = poison_training_set(train, Invert(), index, Target("all2one", 7), num_classes=10)
    assert torch.equal(out.x[index], 255 - x0[index])
    assert (out.y[index] == 7).all()
    assert torch.equal(out.x[rest], x0[rest]) and torch.equal(out.y[rest], y0[rest])
    assert torch.equal(train.x, x0) and torch.equal(train.y, y0), "the input set is not modified"


def test_poisoning_all2all_labels_are_the_next_class(train):
    index = torch.arange(20)
    out = poison_training_set(train, Invert(), index, Target("all2all"), num_classes=10)
    assert torch.equal(out.y, (train.y + 1) % 10)
    assert set(out.y[train.y == 9].tolist()) == {0}


def test_clean_label_poisoning_keeps_the_labels(train):
    index = torch.tensor([0, 2])
    out = poison_training_set(train, Invert(clean_label=True), index, Target("all2one", 7), num_classes=10)
    assert torch.equal(out.y, train.y)
    assert torch.equal(out.x[index], 255 - train.x[index])


def ready(name: str, spec, **params):
    """The attack as after its attack stage: prepared on a tiny set, trained a few batches through its training control."""
    attack = create_attack(name, spec, **params)
    gen = torch.Generator().manual_seed(11)
    x = torch.randint(0, 256, (32, spec.channels, spec.size, spec.size), generator=gen, dtype=torch.uint8)
    y = torch.arange(32) % spec.num_classes
    data = LoadedDataset(spec, ImageSet(x, y), ImageSet(x[:8], y[:8]))
    ctx = AttackContext(Target("all2one", 0), 0.25, torch.Generator().manual_seed(0), torch.device("cpu"))
    attack.prepare(data, ctx)
    model = build_net(lambda: nn.Sequential(nn.Flatten(), nn.Linear(spec.channels * spec.size**2, spec.num_classes)), gen)
    update = GradientStep(torch.optim.SGD(model.parameters(), lr=0.1))
    hooks = attack.training_hooks(model, ctx)
    train_model(model, data.train, TrainConfig(epochs=1, batch_size=16, lr=0.1), spec.augmentation, gen, update, hooks)
    return attack


@pytest.fixture(scope="module")
def attacks():
    """Every registered attack, ready, on 3×8×8 images with 10 classes."""
    spec = DatasetSpec("tiny3x8", channels=3, size=8, num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: faster, and immune to oversubscription on a shared CPU
    try:
        yield {name: ready(name, spec) for name in ATTACKS.names()}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ATTACKS.names())
@pytest.mark.parametrize("mode", ["all2one", "all2all"])
def test_poisoning_with_every_attack_changes_only_the_indexed_rows(name, mode, train, attacks):
    """What the attack stage does: a poison index for attacks that poison the dataset, an empty one for the others."""
    attack = attacks[name]
    if mode not in attack.label_modes:
        pytest.skip(f"{name} supports {attack.label_modes}")
    target = Target(mode, 0)
    index = torch.tensor([3, 9, 10]) if attack.poisons_dataset else torch.empty(0, dtype=torch.int64)
    out = poison_training_set(train, attack, index, target, num_classes=10)
    if attack.poisons_dataset:
        assert torch.equal(out.x[index], attack.poison_inputs(train.x[index], train.y[index]))
        assert not torch.equal(out.x[index], train.x[index])
        expected = train.y[index] if attack.clean_label else target_labels(train.y[index], target, 10)
        assert torch.equal(out.y[index], expected)
        if mode == "all2all" and not attack.clean_label:
            assert torch.equal(out.y[index], (train.y[index] + 1) % 10)
    untouched = torch.ones(20, dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(out.x[untouched], train.x[untouched])
    assert torch.equal(out.y[untouched], train.y[untouched])


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attacks_that_poison_no_dataset_control_training_instead(name):
    """An attack with an empty poison index must poison batches, or it would train a clean model."""
    cls = ATTACKS.get(name)
    if not cls.poisons_dataset:
        assert cls.training_hooks is not Attack.training_hooks
        assert not cls.clean_label


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_declares_label_modes_it_knows(name):
    modes = ATTACKS.get(name).label_modes
    assert "all2one" in modes and set(modes) <= {"all2one", "all2all"}


@pytest.mark.parametrize("name", ["badnets", "blended", "wanet", "inputaware", "lira", "bpp"])
def test_these_attacks_support_both_label_modes(name):
    assert set(ATTACKS.get(name).label_modes) == {"all2one", "all2all"}


@pytest.mark.parametrize("name", ATTACKS.names())
@pytest.mark.parametrize("mode", ["all2one", "all2all"])
def test_backdoor_test_set_with_every_attack(name, mode, attacks):
    test = ImageSet(torch.randint(0, 256, (12, 3, 8, 8), generator=gen(4), dtype=torch.uint8), TEST_LABELS.clone())
    attack = attacks[name]
    if mode not in attack.label_modes:
        pytest.skip(f"{name} supports {attack.label_modes}")
    bd = backdoor_test_set(test, attack, Target(mode, 3), num_classes=10)
    keep = [0, 1, 2, 5, 6, 7, 8, 9, 10] if mode == "all2one" else list(range(12))
    assert torch.equal(bd.y_true, TEST_LABELS[keep])
    assert torch.equal(bd.y_target, torch.full((9,), 3) if mode == "all2one" else (TEST_LABELS + 1) % 10)
    assert torch.equal(bd.x, attack.apply(test.x[keep]))
    assert bd.x.dtype == torch.uint8 and bd.x.shape == (len(keep), 3, 8, 8)


# ---------------------------------------------------------------- backdoor_test_set

TEST_LABELS = torch.tensor([0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9, 3], dtype=torch.int64)


@pytest.fixture
def test_set() -> ImageSet:
    x = torch.arange(12, dtype=torch.uint8).view(12, 1, 1, 1).expand(12, 1, 2, 2).contiguous()
    return ImageSet(x, TEST_LABELS.clone())


def test_all2one_backdoor_test_set_excludes_true_target_images(test_set):
    bd = backdoor_test_set(test_set, Invert(), Target("all2one", 3), num_classes=10)
    keep = [0, 1, 2, 5, 6, 7, 8, 9, 10]  # every position whose label is not 3, in order
    assert torch.equal(bd.y_true, TEST_LABELS[keep])
    assert (bd.y_target == 3).all() and len(bd.y_target) == 9
    assert torch.equal(bd.x, 255 - test_set.x[keep])


def test_all2all_backdoor_test_set_keeps_every_image(test_set):
    bd = backdoor_test_set(test_set, Invert(), Target("all2all"), num_classes=10)
    assert torch.equal(bd.y_true, TEST_LABELS)
    assert torch.equal(bd.y_target, torch.tensor([1, 2, 3, 4, 4, 5, 6, 7, 8, 9, 0, 4]))
    assert torch.equal(bd.x, 255 - test_set.x)
