"""Training control of the attacks that poison batches instead of a dataset (WaNet, Input-aware, LIRA, BPP).

Each attack's ``training_hooks`` drive a recording ``GradientStep``; batches of float
images go through them one at a time as the shared loop feeds them (``train_step``), and the rows' roles (``last``)
are checked against what reached the classifier: how many rows per batch are backdoor
and cross/noise/negative rows, their labels, their images, the generators' training,
and the state that the defense stage restores.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from attacks._generators import BACKDOOR, CLEAN, CROSS, build
from attacks.base import Attack, AttackContext
from attacks.inputaware import sharpen
from bench.core.data import DatasetSpec, ImageSet, LoadedDataset, to_float
from bench.core.pipeline import AttackStageSpec, DefenseStageSpec, run_attack_stage, run_defense_stage
from bench.core.poison import Target, target_labels
from bench.core.registry import ATTACKS, DEFENSES, create_attack
from bench.core.train import GradientStep, TrainConfig, TrainingHooks, Update, steps_per_epoch, train_step

CONTROLLED = [n for n in ATTACKS.names() if ATTACKS.get(n).training_hooks is not Attack.training_hooks]
SPEC = DatasetSpec("tiny3x8", channels=3, size=8, num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
B = 45  # batch size: rho 0.1 → 4.5 backdoor rows per batch, so both roundings happen


pytestmark = pytest.mark.usefixtures("one_thread")


class Recording(GradientStep):
    """A plain SGD step that keeps every batch it was given."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(torch.optim.SGD(model.parameters(), lr=0.05))
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x, y, loss):
        self.batches.append((x.detach().clone(), y.clone()))
        return super().__call__(x, y, loss)


class Driven:
    """Training hooks around an update, fed one batch at a time as the shared loop feeds them.

    Epoch ``e`` starts (``on_epoch``) every ``batches_per_epoch`` batches; ``last`` is the hooks' last batch.
    """

    def __init__(self, model: nn.Module, hooks: TrainingHooks, update: Update, batches_per_epoch: int) -> None:
        self.model, self.hooks, self.update, self.per_epoch = model, hooks, update, batches_per_epoch
        self.step = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.step % self.per_epoch == 0:
            self.hooks.on_epoch(self.step // self.per_epoch)
        loss = train_step(self.model, x, y, self.update, self.hooks, self.step)
        self.step += 1
        return loss

    @property
    def last(self):
        return self.hooks.last


def tiny_model() -> nn.Module:
    factory = lambda: nn.Sequential(  # noqa: E731
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    )
    return build(factory, torch.Generator().manual_seed(5))


def images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 8, 8), generator=gen, dtype=torch.uint8)
    return x, torch.arange(n) % 10


_PREPARED: dict[tuple, tuple[Attack, torch.Tensor]] = {}


def prepared(name: str, seed: int, n_train: int, params: dict) -> tuple[Attack, torch.Generator]:
    """The attack after ``prepare`` on ``n_train`` images, and the generator after it (cached: prepare is the slow part)."""
    key = (name, seed, n_train, tuple(sorted(params.items())))
    if key not in _PREPARED:
        attack = create_attack(name, SPEC, **params)
        x, y = images(n_train, 1)
        gen = torch.Generator().manual_seed(seed)
        attack.prepare(LoadedDataset(SPEC, ImageSet(x, y), ImageSet(x[:10], y[:10])), AttackContext(Target(), 0.1, gen, torch.device("cpu")))
        _PREPARED[key] = attack, gen.get_state()
    attack, state = _PREPARED[key]
    gen = torch.Generator()
    gen.set_state(state)
    return copy.deepcopy(attack), gen


def controlled(name: str, target: Target = Target("all2one", 0), rho: float = 0.1, seed: int = 0, n_train: int = 32, **params):
    """The attack prepared on ``n_train`` images, and its training hooks driving a recording step."""
    attack, gen = prepared(name, seed, n_train, params)
    ctx = AttackContext(target, rho, gen, torch.device("cpu"))
    model = tiny_model()
    inner = Recording(model)
    return attack, Driven(model, attack.training_hooks(model, ctx), inner, steps_per_epoch(n_train, B)), inner


def batches(count: int, seed: int = 2):
    """``count`` float batches of ``B`` images in [0, 1] with labels."""
    for i in range(count):
        x, y = images(B, seed + i)
        yield to_float(x), y[torch.randperm(B, generator=torch.Generator().manual_seed(seed + i))]


def test_the_training_controlled_attacks_are_registered():
    assert {"wanet", "inputaware", "lira", "bpp"} <= set(CONTROLLED)
    for name in CONTROLLED:
        assert not ATTACKS.get(name).poisons_dataset


# ---------------------------------------------------------------- rows per batch


@pytest.mark.parametrize("name", CONTROLLED)
def test_backdoor_and_cross_rows_per_batch(name):
    """Per batch: floor or ceil of the expected count; on average the expected count."""
    attack, update, inner = controlled(name)
    expected = {BACKDOOR: 0.1 * B, CROSS: attack.cross_fraction(0.1) * B}
    counts = {BACKDOOR: [], CROSS: []}
    for x, y in batches(24):
        update(x, y)
        role = update.last.role
        assert role.shape == (B,) and set(role.unique().tolist()) <= {CLEAN, BACKDOOR, CROSS}
        for r in counts:
            counts[r].append(int((role == r).sum()))
    for r, e in expected.items():
        assert set(counts[r]) <= {math.floor(e), math.ceil(e)}, (r, counts[r])
        assert sum(counts[r]) / len(counts[r]) == pytest.approx(e, abs=0.35), (r, counts[r])
    assert len(inner.batches) == 24


@pytest.mark.parametrize("name", CONTROLLED)
def test_a_poison_ratio_below_one_row_per_batch_still_poisons_in_expectation(name):
    """rho = 0.005 at 45 rows: 0.225 backdoor rows per batch, so most batches have none and some have one."""
    _, update, _ = controlled(name, rho=0.005)
    per_batch = []
    for x, y in batches(40):
        update(x, y)
        per_batch.append(int((update.last.role == BACKDOOR).sum()))
    assert set(per_batch) == {0, 1}
    assert 3 <= sum(per_batch) <= 18  # expected 9


# ---------------------------------------------------------------- labels and images by role


@pytest.mark.parametrize("name", CONTROLLED)
@pytest.mark.parametrize("target", [Target("all2one", 3), Target("all2all")], ids=["all2one", "all2all"])
def test_labels_and_images_of_each_role(name, target):
    attack, update, inner = controlled(name, target=target, rho=0.2)
    for x, y in batches(3):
        x0, y0 = x.clone(), y.clone()
        loss = update(x, y)
        assert torch.equal(x, x0) and torch.equal(y, y0), "the batch is not modified in place"
        assert torch.isfinite(loss)
        xs, ys = inner.batches[-1]
        role = update.last.role
        assert torch.equal(xs, update.last.x) and torch.equal(ys, update.last.y)
        bd, cross, clean = role == BACKDOOR, role == CROSS, role == CLEAN
        assert bd.sum() >= 8
        # labels: backdoor rows get the backdoor label; the others keep theirs
        assert torch.equal(ys[bd], target_labels(y[bd], target, 10))
        if target.mode == "all2all":
            assert torch.equal(ys[bd], (y[bd] + 1) % 10)
        assert torch.equal(ys[~bd], y[~bd])
        # images: clean rows untouched, triggered rows changed, everything stays in [0, 1]
        assert torch.equal(xs[clean], x[clean])
        assert (xs[bd] != x[bd]).flatten(1).any(1).all()
        assert (xs[cross] != x[cross]).flatten(1).any(1).all()
        assert xs.min() >= 0 and xs.max() <= 1
        if name == "wanet":
            assert torch.allclose(xs[bd], attack.warp(x[bd]))
            noise_free = attack.warp(x[cross])
            assert not torch.allclose(xs[cross], noise_free), "noise mode adds noise to the grid"
            assert (xs[cross] - noise_free).abs().mean() < (x[cross] - noise_free).abs().mean()
        if name == "bpp":
            assert torch.equal(xs[bd], attack.squeeze(x[bd]))
            residuals = attack.squeeze(x) - x  # each negative row is x_i plus the residual of another row
            for i in torch.nonzero(cross).flatten().tolist():
                candidates = (x[i] + residuals).clamp(0, 1)
                hits = [j for j in range(B) if j != i and torch.allclose(xs[i], candidates[j])]
                assert hits, f"negative row {i} is not x_i + T(x_j) − x_j for any other j"
        if name == "lira":
            assert torch.allclose(xs[bd], attack.perturb(x[bd]))
            assert (xs[bd] - x[bd]).abs().max() <= attack.params.eps + 1e-6
        if name == "inputaware":
            with torch.no_grad():
                own = attack.pattern.eval()(x[cross])
                attack.pattern.train()
            assert not torch.allclose(xs[cross], own), "cross rows carry another image's trigger"


@pytest.mark.parametrize("name", CONTROLLED)
def test_a_step_steps_the_classifier_and_returns_the_detached_batch_loss(name):
    _, update, inner = controlled(name)
    before = [p.detach().clone() for group in inner.optimizer.param_groups for p in group["params"]]
    x, y = next(batches(1))
    loss = update(x, y)
    assert loss.dim() == 0 and not loss.requires_grad and torch.isfinite(loss)
    after = [p.detach() for group in inner.optimizer.param_groups for p in group["params"]]
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "the classifier's optimiser stepped"


@pytest.mark.parametrize("name", CONTROLLED)
def test_training_control_draws_only_from_the_attack_generator(name):
    """Same ``ctx.generator`` seed → same batches to the classifier; another seed → other rows."""

    def run(seed: int):
        _, update, inner = controlled(name, seed=seed)
        roles = []
        for x, y in batches(3):
            update(x, y)
            roles.append(update.last.role.clone())
        return roles, inner.batches

    roles_a, batches_a = run(0)
    roles_b, batches_b = run(0)
    roles_c, _ = run(1)
    assert all(torch.equal(a, b) for a, b in zip(roles_a, roles_b))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches_a, batches_b))
    assert not all(torch.equal(a, c) for a, c in zip(roles_a, roles_c))


# ---------------------------------------------------------------- learned generators


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters only (a forward in train mode moves BatchNorm statistics without any step)."""
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_inputaware_mask_is_pretrained_in_prepare_then_frozen():
    untrained, _, _ = controlled("inputaware", mask_epochs=0)
    attack, update, _ = controlled("inputaware")
    x, _ = images(90, 1)
    with torch.no_grad():
        density_before = sharpen(untrained.mask.eval()(to_float(x))).mean()
        density_after = sharpen(attack.mask.eval()(to_float(x))).mean()
    assert density_after < density_before - 0.05, "pre-training shrinks the mask towards mask_density"
    mask, pattern = snapshot(attack.mask), weights(attack.pattern)
    for x, y in batches(3):
        update(x, y)
    assert same(snapshot(attack.mask), mask), "the mask generator is frozen during training"
    assert not same(weights(attack.pattern), pattern), "the pattern generator trains with the classifier"


def test_inputaware_pattern_generator_gets_the_classifier_loss_and_the_diversity_loss():
    """With lambda_div 0, the pattern generator still moves (the classifier's loss reaches it through the images)."""
    attack, update, _ = controlled("inputaware", lambda_div=0.0)
    before = weights(attack.pattern)
    update(*next(batches(1)))
    assert not same(weights(attack.pattern), before)


def test_lira_generator_trains_for_its_epochs_and_the_frozen_copy_follows_at_epoch_starts():
    attack, update, _ = controlled("lira", n_train=90, generator_epochs=1)  # 2 batches of 45 per epoch
    frozen0, trained0 = snapshot(attack.generator), snapshot(attack.training_generator)
    assert same(frozen0, trained0)
    stream = batches(6)
    for _ in range(2):  # epoch 0: G trains, G' stays
        update(*next(stream))
    g_after_epoch0 = snapshot(attack.training_generator)
    assert not same(weights(attack.training_generator), {k: trained0[k] for k in weights(attack.training_generator)})
    assert same(snapshot(attack.generator), frozen0)
    for _ in range(4):  # epochs 1 and 2: G' = G from the end of epoch 0, and G no longer trains
        update(*next(stream))
        assert same(snapshot(attack.training_generator), g_after_epoch0)
        assert same(snapshot(attack.generator), g_after_epoch0)


@pytest.mark.parametrize("name", [n for n in CONTROLLED if ATTACKS.get(n).state_dict is not Attack.state_dict])
def test_trained_generators_are_restored_from_the_state(name):
    attack, update, _ = controlled(name)
    initial = attack.state_dict()
    for x, y in batches(4):
        update(x, y)
    state = attack.state_dict()
    assert state.keys() == initial.keys()
    learned = [k for k in state if state[k].is_floating_point() and "running" not in k]  # weights, not BN statistics
    assert not all(torch.equal(state[k], initial[k]) for k in learned), "training changed the trigger's weights"
    restored = ATTACKS.get(name)(attack.params, SPEC)
    x, _ = images(6, 9)
    assert not torch.equal(restored.apply(x), attack.apply(x))
    restored.load_state_dict(state)
    assert torch.equal(restored.apply(x), attack.apply(x))


# ---------------------------------------------------------------- through the pipeline


@pytest.mark.parametrize("name", CONTROLLED)
def test_attack_stage_and_defense_stage_agree_on_the_trigger(name, tmp_path):
    """The attack stage trains through the training control and saves the state; the defense stage restores it:
    with no defense the backdoor metrics come out the same. No poison index; the global RNG is left alone."""
    x, y = images(64, 3)
    xt, yt = images(30, 4)
    data = LoadedDataset(SPEC, ImageSet(x, y), ImageSet(xt, yt))
    params = ATTACKS.get(name).Params()
    spec = AttackStageSpec("tiny", "small_cnn", name, params, 0.1, Target("all2one", 0), 0, TrainConfig(epochs=1, batch_size=16, lr=0.05))
    rng = torch.get_rng_state()
    outcome = run_attack_stage(spec, data, tmp_path / spec.key)
    assert torch.equal(torch.get_rng_state(), rng), "the attack stage does not draw from the global RNG"
    assert outcome.n_poison == 0
    cell = DefenseStageSpec(spec, "none", DEFENSES.get("none").Params(), clean_fraction=0.1)
    defended = run_defense_stage(cell, data, tmp_path / spec.key)
    assert defended.after == defended.before
