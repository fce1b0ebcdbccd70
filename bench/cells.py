"""Expand a grid into cells with stable ids, grouped by the backdoored model they share.

Ids are sha256 digests of canonical JSON (sorted keys, validated parameters with
defaults filled in), so the same grid gives the same ids on any machine, and
spelling a default explicitly does not change an id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

from bench.grid import Grid, MethodChoice, rule_matches
from bench.core import AttackStageSpec, DefenseStageSpec, Target, TrainConfig

ID_SCHEME = 1  # bump when the meaning of an id's content changes


def stable_hash(content: dict[str, Any]) -> str:
    """16 hex digits of sha256 over canonical JSON of ``content``."""
    text = json.dumps({"id_scheme": ID_SCHEME, **content}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One grid point: a defense with one clean fraction, applied to one backdoored model."""

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

    def attack_content(self) -> dict[str, Any]:
        """Everything that determines the backdoored model's weights."""
        return {
            "dataset": self.dataset,
            "arch": self.arch,
            "attack": {"name": self.attack.name, "params": self.attack.params_dict},
            "poison_ratio": self.poison_ratio,
            "target": dataclasses.asdict(self.target),
            "seed": self.seed,
            "train": dataclasses.asdict(self.train),
        }

    @property
    def attack_key(self) -> str:
        return stable_hash(self.attack_content())

    @property
    def cell_id(self) -> str:
        content = {
            "attack_key": self.attack_key,
            "defense": {"name": self.defense.name, "params": self.defense.params_dict},
            "clean_fraction": self.clean_fraction,
        }
        if self.metrics:  # a cell that measures more is another cell; without extras, ids stay as they were
            content["metrics"] = sorted(self.metrics)
        return stable_hash(content)

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

    def attack_stage(self) -> AttackStageSpec:
        return AttackStageSpec(
            key=self.attack_key,
            dataset=self.dataset,
            arch=self.arch,
            attack=self.attack.name,
            attack_params=self.attack.params,
            poison_ratio=self.poison_ratio,
            target=self.target,
            seed=self.seed,
            train=self.train,
        )

    def defense_stage(self) -> DefenseStageSpec:
        return DefenseStageSpec(
            cell_id=self.cell_id,
            attack=self.attack_stage(),
            defense=self.defense.name,
            defense_params=self.defense.params,
            clean_fraction=self.clean_fraction,
            extra_metrics=self.metrics,
        )

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
