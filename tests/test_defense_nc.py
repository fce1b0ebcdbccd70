"""Neural Cleanse: anomaly index against the MAD formula, the cost schedule, stamping, and
recovery of a trigger planted in a tiny linear model."""

from __future__ import annotations

import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.core.archs.base import Normalized
from bench.core.data import Augmentation, DatasetSpec, ImageSet
from bench.core.params import field_values
from bench.core.registry import create_defense
from defenses.base import DefenseContext
from defenses.nc import NCParams, Trigger, _CostSchedule, anomaly_indices, flagged_classes, reverse_engineer, unlearning_set

K, SIDE = 10, 8


pytestmark = pytest.mark.usefixtures("one_thread")


def mad_index(norms: list[float]) -> list[float]:
    """The anomaly index by hand: |x − median| / (1.4826 · median |x − median|)."""
    median = statistics.median(norms)
    mad = 1.4826 * statistics.median(abs(v - median) for v in norms)
    return [abs(v - median) / mad for v in norms]


# ---------------------------------------------------------------- outlier detection


def test_anomaly_index_matches_the_mad_formula():
    norms = [3.0, 10.0, 11.0, 12.0, 9.0, 10.5, 11.5, 10.0, 12.5, 9.5]  # even count: median is 10.25
    got = anomaly_indices(torch.tensor(norms)).tolist()
    assert got == pytest.approx(mad_index(norms), rel=1e-9)
    assert got[0] == pytest.approx(7.25 / 1.4826, rel=1e-9)  # median |x − 10.25| is 1.0


def test_only_small_norm_outliers_are_flagged():
    norms = torch.tensor([10.0, 2.0, 11.0, 9.0, 10.5, 60.0, 9.5, 10.2, 11.1, 9.8])
    index = anomaly_indices(norms)
    assert index[5] > 2 and index[1] > 2  # both are outliers ...
    assert flagged_classes(norms, 2.0) == [1]  # ... but only the small one is a trigger candidate
    assert flagged_classes(norms, float(index[1]) + 1e-6) == []


def test_flagged_classes_come_smallest_norm_first():
    norms = torch.tensor([10.0, 2.0, 11.0, 1.0, 10.5, 10.0, 9.5, 10.2, 11.1, 9.8])
    assert flagged_classes(norms, 2.0) == [3, 1]


def test_zero_mad_gives_a_finite_index():
    index = anomaly_indices(torch.tensor([5.0, 5.0, 5.0, 1.0]))
    assert torch.isfinite(index).all() and index[0] == 0 and index[3] > 1e6


# ---------------------------------------------------------------- pieces


def test_cost_goes_up_after_patience_successes_and_down_after_patience_failures():
    params = NCParams(patience=2, init_cost=1e-3, cost_multiplier=2.0)
    schedule = _CostSchedule(params)
    trigger = Trigger(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))
    for _ in range(2):
        schedule.end_round(success=1.0, l1=5.0, current=trigger)
    assert schedule.cost == pytest.approx(2e-3)
    for _ in range(2):
        schedule.end_round(success=0.5, l1=4.0, current=trigger)
    assert schedule.cost == pytest.approx(2e-3 / 2**1.5)
    assert schedule.best_l1 == 5.0  # the 4.0 epochs never reached the success threshold


def test_stamp_blends_mask_and_pattern_in_pixel_space():
    mask = torch.tensor([[[1.0, 0.5], [0.0, 0.25]]])
    pattern = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    x = torch.tensor([[[[0, 200], [100, 40]]]], dtype=torch.uint8)
    expected = torch.tensor([[[[255, 100], [100, 94]]]], dtype=torch.uint8)  # 0.75·40 + 0.25·255 = 93.75
    assert torch.equal(Trigger(mask, pattern).stamp(x), expected)


def test_unlearning_set_replaces_a_fraction_by_stamped_copies_with_true_labels():
    gen = torch.Generator().manual_seed(0)
    clean = ImageSet(torch.randint(0, 200, (10, 1, 4, 4), generator=gen, dtype=torch.uint8), torch.arange(10) % 3)
    white = Trigger(torch.ones(1, 4, 4), torch.ones(1, 4, 4))
    data = unlearning_set(clean, [white, white], 0.2, gen)
    assert len(data) == 8 + 2 * 2
    stamped = (data.x == 255).flatten(1).all(1)
    assert int(stamped.sum()) == 4
    assert sorted(data.y.tolist()) == sorted(clean.y.tolist() + data.y[stamped][:2].tolist())
    kept = data.x[~stamped]
    assert all(any(torch.equal(k, c) for c in clean.x) for k in kept)


# ---------------------------------------------------------------- a planted trigger


def corner(x: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    out[:, :, -2:, -2:] = 1.0
    return out


@pytest.fixture(scope="module")
def planted():
    """A linear classifier on 8×8 images, trained on data where a 2×2 white corner means class 0."""
    gen = torch.Generator().manual_seed(0)
    templates = torch.rand(K, 1, SIDE, SIDE, generator=gen)
    y = torch.arange(400) % K
    x = 0.6 * templates[y] + 0.4 * torch.rand(400, 1, SIDE, SIDE, generator=gen)
    poison = torch.rand(400, generator=gen) < 0.3
    x_train = torch.where(poison[:, None, None, None], corner(x), x)
    y_train = torch.where(poison, torch.zeros_like(y), y)
    model = Normalized(nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, K)), (0.5,), (0.25,))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model.apply(lambda m: m.reset_parameters() if isinstance(m, nn.Linear) else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        loss = F.cross_entropy(model(x_train), y_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    spec = DatasetSpec("planted", 1, SIDE, K, (0.5,), (0.25,), Augmentation())
    clean = ImageSet((x[:100] * 255).round().to(torch.uint8), y[:100])
    victims = x[100:][y[100:] != 0]
    assert (model(corner(victims)).argmax(1) == 0).float().mean() > 0.9, "the backdoor was not planted"
    return model, spec, clean, victims


def ctx(spec, seed=1):
    return DefenseContext(spec=spec, generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"))


def test_reverse_engineering_finds_the_planted_corner(planted):
    model, spec, clean, _ = planted
    params = NCParams(steps=150, batch_size=100, round_steps=5)
    trigger = reverse_engineer(model, clean, 0, params, ctx(spec))
    assert trigger.l1 < 6.0
    corner_mass = trigger.mask[0, -2:, -2:].sum().item()
    assert corner_mass > 0.5 * trigger.l1, "the mask should sit on the planted corner"
    other = reverse_engineer(model, clean, 3, params, ctx(spec))
    assert other.l1 > 1.5 * trigger.l1


def test_nc_flags_the_planted_target_and_unlearning_lowers_its_success(planted):
    model, spec, clean, victims = planted
    params = NCParams(steps=150, batch_size=100, round_steps=5, epochs=30, lr=0.05)
    output = create_defense("nc", **field_values(params)).run(model, clean, ctx(spec))
    det = output.detection
    assert det["flagged"] == 1.0 and det["target"] == 0.0
    assert det["anomaly_index"] > 2.0
    assert det["mask_l1_0"] == min(det[f"mask_l1_{k}"] for k in range(K))
    assert len(output.epoch_losses) == 30
    before = (model(corner(victims)).argmax(1) == 0).float().mean().item()
    after = (output.model(corner(victims)).argmax(1) == 0).float().mean().item()
    assert after < before - 0.3


def test_nothing_flagged_returns_the_model_unchanged(planted):
    model, spec, clean, _ = planted
    params = NCParams(steps=3, batch_size=100, anomaly_threshold=1e9)
    output = create_defense("nc", **field_values(params)).run(model, clean, ctx(spec))
    assert output.detection["flagged"] == 0.0 and output.detection["target"] == -1.0
    assert output.epoch_losses == []
    after = output.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in model.state_dict().items())
