"""Can a defense's parametrisation remove the backdoor, and does the defense's own objective prefer that?

    python benchmarks/defense_oracle.py --attacks badnets,blended --fraction 0.05

For NFT (BatchNorm masks within its clip bounds) and Fast FIP (shifts of every layer's
singular values), trains the defense's own parametrisation of the backdoored digits
model with the trigger known (the oracle): clean cross-entropy on the training set plus
the cross-entropy of triggered images against their true labels, on the first half of
the triggered test images; ASR is measured on the other half. It then evaluates the
defense's objective on the defender's clean subset, without augmentation, at the input
model, at the defense's result (``bench``'s implementation, with the parameters the
validation grid ``--grid`` gives it) and at the oracle. An oracle that removes the
backdoor but scores worse on the objective than the defense's result shows that the
objective does not prefer the backdoor-free model.

- NFT's objective: the MixUp cross-entropy, mean over fixed (λ, permutation) draws.
- Fast FIP's: clean CE + η_F·T_δ/T_δ⁰ + (w/2)·Σ F̂_δ δ², with T_δ the Fisher trace w.r.t.
  the spectral shifts δ, on the whole clean subset. A model is mapped to its δ by
  projecting its weights on the input model's singular vectors. Two more points: the
  objective itself minimised by Adam (no trigger: what a good optimiser of it reaches),
  and an oracle that adds the trace term (weight 1) to its loss (how low the trace can
  stay without the backdoor).

Everything runs in eval mode (BatchNorm on running statistics) on the backdoored
small_cnn models that ``benchmarks/defense_check.py`` trains and caches (``--cache``);
``--param`` changes the defenses' own runs (e.g. ``--param lr=0.005``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from bench.core.artifacts import verify_artifact
from bench.core.datasets import load_dataset
from bench.core.params import field_values
from bench.grid import load_grid
from bench.core.data import DataOptions, ImageSet, LoadedDataset
from bench.core.pipeline import Backdoored, DefenseStageSpec, defender_clean_set, load_backdoored, run_attack_stage
from bench.core.registry import DEFENSES, create_defense
from defense_check import attack_spec  # benchmarks/defense_check.py, beside this script
from defenses._fisher import cda_penalty, diagonal_fisher, fisher_trace, relative_trace_weight
from defenses.base import DefenseContext
from defenses.fast_fip import SpectralShift
from defenses.nft import MaskedBN

ORACLE_STEPS = 300
MIXUP_DRAWS = 200
Forward = Callable[[Tensor], Tensor]  # images [B, C, H, W] in [0, 1] -> logits [B, K]


@dataclass(frozen=True)
class Point:
    label: str
    acc: float  # clean test accuracy, in [0, 1]
    asr: float  # on the held-out half of the triggered test images, in [0, 1]
    objective: float
    detail: str = ""


@dataclass(frozen=True)
class Setting:
    """One backdoored model with everything the oracle and the objectives need (tensors on the CPU)."""

    data: LoadedDataset
    backdoored: Backdoored
    clean: ImageSet  # the defender's clean subset
    seed: int
    defense_params: dict[str, object]  # defense name -> its Params, as the validation grid sets them

    def halves(self) -> tuple[int, Tensor, Tensor, Tensor]:
        bd = self.backdoored.backdoor_test
        half = len(bd.x) // 2
        return half, bd.x.float().div(255), bd.y_true, bd.y_target

    @torch.no_grad()
    def measure(self, forward: Forward) -> tuple[float, float]:
        """Clean test accuracy and ASR on the held-out half of the triggered test images."""
        half, bd_x, _, bd_target = self.halves()
        acc = (forward(self.data.test.x.float().div(255)).argmax(1) == self.data.test.y).float().mean().item()
        asr = (forward(bd_x[half:]).argmax(1) == bd_target[half:]).float().mean().item()
        return acc, asr


def frozen(model: nn.Module) -> nn.Module:
    """A copy in eval mode whose own parameters take no gradient (only a reparametrisation of it is trained)."""
    clone = copy.deepcopy(model).eval()
    clone.requires_grad_(False)
    return clone


def unlearn(setting: Setting, forward: Forward, params: list[Tensor], after_step: Callable[[], None],
            extra: Callable[[], Tensor] | None = None) -> None:
    """Adam on clean CE + CE of triggered images against their true labels, ``ORACLE_STEPS`` batches of 64 + 64."""
    half, bd_x, bd_true, _ = setting.halves()
    clean_x, clean_y = setting.data.train.x.float().div(255), setting.data.train.y
    gen = torch.Generator().manual_seed(setting.seed)
    optimizer = torch.optim.Adam(params, lr=0.01)
    for _ in range(ORACLE_STEPS):
        i = torch.randint(0, len(clean_x), (64,), generator=gen)
        j = torch.randint(0, half, (64,), generator=gen)
        loss = F.cross_entropy(forward(clean_x[i]), clean_y[i]) + F.cross_entropy(forward(bd_x[j]), bd_true[j])
        if extra is not None:
            loss = loss + extra()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        after_step()


def defended(setting: Setting, defense: str) -> nn.Module:
    """``bench``'s ``defense`` (the validation grid's parameters) applied to a copy of the backdoored model."""
    ctx = DefenseContext(spec=setting.data.spec, generator=torch.Generator().manual_seed(setting.seed), device=torch.device("cpu"))
    return create_defense(defense, **field_values(setting.defense_params[defense])).run(setting.backdoored.model, setting.clean, ctx).model.eval()


def mixup_objective(clean: ImageSet, seed: int) -> Callable[[Forward], float]:
    """NFT's MixUp cross-entropy of a forward function over ``MIXUP_DRAWS`` fixed (λ ~ U(0, 1), permutation) draws."""
    gen = torch.Generator().manual_seed(seed)
    x, y = clean.x.float().div(255), clean.y
    draws = [(torch.rand((), generator=gen).item(), torch.randperm(len(x), generator=gen)) for _ in range(MIXUP_DRAWS)]

    @torch.no_grad()
    def objective(forward: Forward) -> float:
        total = 0.0
        for lam, perm in draws:
            out = forward(lam * x + (1 - lam) * x[perm])
            total += (lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y[perm])).item()
        return total / len(draws)

    return objective


def nft_points(setting: Setting) -> list[Point]:
    objective = mixup_objective(setting.clean, setting.seed)
    points = []
    for label, model in (("input", frozen(setting.backdoored.model)), ("nft", defended(setting, "nft"))):
        points.append(Point(label, *setting.measure(model), objective(model)))
    params = DEFENSES.get("nft").Params()
    masked = MaskedBN(frozen(setting.backdoored.model), params.alpha, params.beta)
    unlearn(setting, masked.forward, masked.masks, masked.clip)
    means = " ".join(f"{m.mean().item():.2f}" for m in masked.masks)
    points.append(Point("oracle masks", *setting.measure(masked.forward), objective(masked.forward), f"mask means per BatchNorm {means}"))
    return points


class SpectralObjective:
    """Fast FIP's loss at a model of the parametrisation, on the whole clean subset: CE + η_F·T_δ/T_δ⁰ + CDA."""

    def __init__(self, setting: Setting) -> None:
        self.params = DEFENSES.get("fast_fip").Params()
        self.shift = SpectralShift(frozen(setting.backdoored.model))
        self.x, self.y = setting.clean.x.float().div(255), setting.clean.y
        zero = self.shift.zero_shifts()
        self.fisher = diagonal_fisher(self.shift.fn(), zero, setting.clean, 64)
        self.anchor = zero
        self.trace_scale = relative_trace_weight(1.0, self.fisher)  # 1 / T_δ⁰

    def terms(self, deltas: dict[str, Tensor], model: nn.Module | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Clean CE, T_δ/T_δ⁰ and the CDA penalty at ``deltas`` (differentiable w.r.t. them)."""
        fn = self.shift.fn(model)
        ce = F.cross_entropy(fn(deltas, self.x), self.y)
        trace = fisher_trace(fn, deltas, self.x, self.y) * self.trace_scale
        return ce, trace, cda_penalty(deltas, self.anchor, self.fisher, self.params.cda_weight)

    def loss(self, deltas: dict[str, Tensor]) -> Tensor:
        ce, trace, cda = self.terms(deltas)
        return ce + self.params.reg_F * trace + cda

    def __call__(self, deltas: dict[str, Tensor], model: nn.Module | None = None) -> tuple[float, str]:
        ce, trace, cda = (t.item() for t in self.terms({k: v.detach().clone().requires_grad_() for k, v in deltas.items()}, model))
        return ce + self.params.reg_F * trace + cda, f"CE {ce:.4f}  T/T0 {trace:.2f}  CDA {cda:.4f}"


def minimise(loss: Callable[[], Tensor], params: list[Tensor]) -> None:
    """Adam (lr 0.01) on ``loss`` for ``ORACLE_STEPS`` steps: the objective itself, well optimised."""
    optimizer = torch.optim.Adam(params, lr=0.01)
    for _ in range(ORACLE_STEPS):
        value = loss()
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()


def fast_fip_points(setting: Setting) -> list[Point]:
    objective = SpectralObjective(setting)
    shift = objective.shift
    points = [Point("input", *setting.measure(shift.model), *objective(shift.zero_shifts()))]
    result = defended(setting, "fast_fip")
    points.append(Point("fast_fip", *setting.measure(result), *objective(shift.project(result), result)))
    deltas = {k: v.requires_grad_() for k, v in shift.zero_shifts().items()}
    minimise(lambda: objective.loss(deltas), list(deltas.values()))
    points.append(Point("objective minimised", *setting.measure(lambda x: shift.fn()(deltas, x)), *objective(deltas)))
    for label, weight in (("oracle shifts", 0.0), ("oracle shifts + trace", 1.0)):
        deltas = {k: v.requires_grad_() for k, v in shift.zero_shifts().items()}
        forward = lambda x, d=deltas: shift.fn()(d, x)  # noqa: E731
        trace = lambda d=deltas: weight * objective.terms(d)[1]  # noqa: E731
        unlearn(setting, forward, list(deltas.values()), lambda: None, trace if weight else None)
        points.append(Point(label, *setting.measure(forward), *objective(deltas)))
    return points


POINTS: dict[str, Callable[[Setting], list[Point]]] = {"nft": nft_points, "fast_fip": fast_fip_points}


def load_setting(attack: str, seed: int, fraction: float, data: LoadedDataset, cache: Path, defense_params: dict) -> Setting:
    spec = attack_spec(attack, seed, 0.1)
    artifact = cache / spec.key
    if not verify_artifact(artifact):
        run_attack_stage(spec, data, artifact)
    cell = DefenseStageSpec(spec, "none", DEFENSES.get("none").Params(), fraction)
    return Setting(data, load_backdoored(spec, data, artifact, torch.device("cpu")), defender_clean_set(cell, data, True), seed, defense_params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defenses", default="nft,fast_fip")
    parser.add_argument("--attacks", default="badnets,blended")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench-check"))
    parser.add_argument("--grid", type=Path, default=Path("grids/digits_defenses.yaml"), help="where the defenses' parameters come from")
    parser.add_argument("--param", action="append", default=[], help="NAME=VALUE (YAML value) for the defenses' own runs, repeatable")
    args = parser.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in args.param)}
    defense_params = {choice.name: dataclasses.replace(choice.params, **overrides)
                      for choice in load_grid(args.grid).defenses if choice.name in POINTS}

    data = load_dataset("digits", DataOptions(Path("data")))
    print(f"{'attack':9} {'defense':9} {'point':22} {'C-Acc':>6} {'ASR':>6} {'objective':>9}")
    for attack in args.attacks.split(","):
        setting = load_setting(attack, args.seed, args.fraction, data, args.cache, defense_params)
        for defense in args.defenses.split(","):
            for point in POINTS[defense](setting):
                print(f"{attack:9} {defense:9} {point.label:22} {100 * point.acc:6.1f} {100 * point.asr:6.1f} {point.objective:9.4f}  {point.detail}", flush=True)


if __name__ == "__main__":
    main()
