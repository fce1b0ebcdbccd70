"""Expand a grid into cells with stable ids, grouped by the backdoored model they share.

Ids come from the stage specs (``bench.core``): sha256 digests of canonical JSON of the
validated content, defaults filled in, so the same grid gives the same ids on any
machine, and spelling a default explicitly does not change an id.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any

from bench.core import AttackStageSpec, DefenseStageSpec, Target, TrainConfig
from bench.grid import Grid, MethodChoice, rule_matches


@dataclass(frozen=True)
class Cell:
    """One grid point: a defense with one clean fraction, applied to one backdoored model.

    Its ids are its stage specs' content hashes: ``attack_key`` (the backdoored model) and
    ``cell_id`` (the cell).
    """

    dataset: str
    arch: str
    attack: MethodChoice
    poison_ratio: float
    target: Target
    defense: MethodChoice
    clean_fraction: float
    seed: int
    train: TrainConfig
    metrics: tuple[str, ...] = ()  # extra metrics measured before and after the defense

    @functools.cached_property
    def attack_stage(self) -> AttackStageSpec:
        """The backdoored model this cell defends."""
        return AttackStageSpec(
            dataset=self.dataset,
            arch=self.arch,
            attack=self.attack.name,
            attack_params=self.attack.params,
            poison_ratio=self.poison_ratio,
            target=self.target,
            seed=self.seed,
            train=self.train,
        )

    @functools.cached_property
    def defense_stage(self) -> DefenseStageSpec:
        """The cell as the compute layer runs it."""
        return DefenseStageSpec(
            attack=self.attack_stage,
            defense=self.defense.name,
            defense_params=self.defense.params,
            clean_fraction=self.clean_fraction,
            extra_metrics=self.metrics,
        )

    @property
    def attack_key(self) -> str:
        return self.attack_stage.key

    @property
    def cell_id(self) -> str:
        return self.defense_stage.cell_id

    def axis_values(self) -> dict[str, Any]:
        """The values an ``exclude`` rule can match on."""
        return {
            "dataset": self.dataset,
            "arch": self.arch,
            "attack": self.attack,
            "poison_ratio": self.poison_ratio,
            "target_mode": self.target.mode,
            "target_label": self.target.label,
            "defense": self.defense,
            "clean_fraction": self.clean_fraction,
            "seed": self.seed,
        }

    def tag(self) -> str:
        """A short readable name: ``digits/small_cnn/badnets/0.1/ft/0.05/s0``."""
        return "/".join(
            str(v)
            for v in (self.dataset, self.arch, self.attack.label, self.poison_ratio, self.defense.label, self.clean_fraction, f"s{self.seed}")
        )


def is_excluded(cell: Cell, rules: tuple[dict[str, Any], ...]) -> bool:
    """True when every key of some rule matches the cell (attack/defense by name or label)."""
    values = cell.axis_values()
    return any(rule_matches(rule, values) for rule in rules)


def expand(grid: Grid) -> list[Cell]:
    """All cells of ``grid`` not excluded, in a fixed order (the order of the grid's axes)."""
    cells = [
        Cell(dataset, arch, attack, rho, target, defense, fraction, seed, grid.train, grid.metrics)
        for seed, dataset, arch, attack, rho, target, defense, fraction in itertools.product(
            grid.seeds,
            grid.datasets,
            grid.archs,
            grid.attacks,
            grid.poison_ratios,
            grid.targets,
            grid.defenses,
            grid.clean_fractions,
        )
    ]
    return [cell for cell in cells if not is_excluded(cell, grid.exclude)]


def group_by_attack(cells: list[Cell]) -> dict[str, list[Cell]]:
    """Attack key → the cells that share that backdoored model, in cell order."""
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.attack_key, []).append(cell)
    return groups
