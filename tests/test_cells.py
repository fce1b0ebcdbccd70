"""Expansion into cells: counts, exclusion, grouping, and ids stable across machines."""

from __future__ import annotations

import textwrap

from bench.cells import expand, group_by_attack
from bench.core.hashing import stable_id
from bench.grid import load_grid

GRID = """\
name: cells
seeds: [0, 1]
datasets: [digits]
archs: [small_cnn]
attacks: [badnets, {name: blended, alpha: 0.1}]
poison_ratios: [0.1, 0.05]
defenses: [none, ft, ftsam]
clean_fractions: [0.05, 0.01]
train: {epochs: 3}
"""


def load(tmp_path, text=GRID):
    path = tmp_path / "g.yaml"
    path.write_text(textwrap.dedent(text))
    return load_grid(path)


def test_counts_and_grouping(tmp_path):
    cells = expand(load(tmp_path))
    assert len(cells) == 2 * 2 * 2 * 3 * 2
    groups = group_by_attack(cells)
    assert len(groups) == 2 * 2 * 2  # seeds × attacks × ratios: defenses and fractions share a model
    assert all(len(g) == 6 for g in groups.values())
    assert len({c.cell_id for c in cells}) == len(cells)


def test_exclude_by_name_and_value(tmp_path):
    text = GRID + "exclude: [{attack: blended, poison_ratio: 0.05}, {defense: ftsam, clean_fraction: 0.01, seed: 1}]\n"
    cells = expand(load(tmp_path, text))
    assert not any(c.attack.name == "blended" and c.poison_ratio == 0.05 for c in cells)
    assert not any(c.defense.name == "ftsam" and c.clean_fraction == 0.01 and c.seed == 1 for c in cells)
    # rule 1: 2 seeds × 3 defenses × 2 fractions = 12; rule 2: 2 attacks × 2 ratios = 4, one already gone
    assert len(cells) == 48 - 12 - 3


def test_ids_are_pinned(tmp_path):
    """The same grid gives these ids on any machine; a change here breaks every stored result."""
    cell = expand(load(tmp_path))[0]
    assert (cell.attack.name, cell.poison_ratio, cell.defense.name, cell.clean_fraction, cell.seed) == ("badnets", 0.1, "none", 0.05, 0)
    assert stable_id({"a": 1}) == "b941d3a1df2bda45"
    assert cell.attack_key == "6a25abf8de33fdf6"
    assert cell.cell_id == "145bff8b73760be1"


def test_a_cell_and_its_stage_specs_share_one_id_rule(tmp_path):
    """The attack key is the attack-stage spec's own content hash; the cell id the defense-stage spec's."""
    cell = expand(load(tmp_path))[0]
    assert cell.attack_key == cell.attack_stage.key == cell.defense_stage.attack.key
    assert cell.cell_id == cell.defense_stage.cell_id
    assert cell.attack_stage.key == stable_id(cell.attack_stage.content())


def test_explicit_defaults_do_not_change_ids(tmp_path):
    a = expand(load(tmp_path))
    b = expand(load(tmp_path, GRID.replace("[none, ft, ftsam]", "[none, {name: ft, lr: 0.01}, {name: ftsam, rho: 2.0}]")))
    assert [c.cell_id for c in a] == [c.cell_id for c in b]


def test_training_config_changes_attack_key_not_defense_grouping(tmp_path):
    a = expand(load(tmp_path))
    b = expand(load(tmp_path, GRID.replace("epochs: 3", "epochs: 4")))
    assert {c.attack_key for c in a}.isdisjoint({c.attack_key for c in b})
