"""Grid validation: every bad input ends with one clear message naming file and place."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bench.cells import expand
from bench.grid import GridError, load_grid

VALID = """\
name: tiny
seeds: [0]
datasets: [digits]
archs: [small_cnn]
attacks: [badnets, {name: blended, alpha: 0.1}]
poison_ratios: [0.1]
target: {mode: all2one, label: 0}
defenses: [none, {name: ft, epochs: 1}]
clean_fractions: [0.05]
train: {epochs: 1}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(GridError) as caught:
        load_grid(write(tmp_path, text))
    return str(caught.value)


def test_valid_grid_loads_with_typed_params(tmp_path):
    grid = load_grid(write(tmp_path, VALID))
    assert grid.attacks[1].params.alpha == 0.1
    assert grid.defenses[1].params.epochs == 1
    assert grid.defenses[1].params.lr == 0.01  # default filled in
    assert grid.train.epochs == 1 and grid.train.batch_size == 128


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("seeds: [0]", "seeds: [0]\nsedes: [1]", ["(top level): unknown key 'sedes'", "did you mean 'seeds'"]),
        ("train: {epochs: 1}", "train: {epochs: 1, epoch: 2}", ["train: unknown key 'epoch'", "did you mean 'epochs'"]),
        ("{name: blended, alpha: 0.1}", "{name: blended, alpah: 0.1}", ["attacks[1]: unknown key 'alpah'", "'alpha'"]),
        ("target: {mode: all2one, label: 0}", "target: {mode: all2one, lable: 0}", ["target: unknown key 'lable'"]),
        ("[badnets,", "[badnet,", ["attacks[0]: unknown attack 'badnet'", "did you mean 'badnets'"]),
        ("defenses: [none,", "defenses: [nonee,", ["defenses[0]: unknown defense 'nonee'"]),
        ("archs: [small_cnn]", "archs: [resnet1000]", ["archs[0]: unknown architecture 'resnet1000'"]),
        ("datasets: [digits]", "datasets: [imagenet22k]", ["datasets[0]: unknown dataset 'imagenet22k'"]),
        ("poison_ratios: [0.1]", "poison_ratios: [0.1, 1.5]", ["poison_ratios[1]", "less than or equal to 1", "1.5"]),
        ("poison_ratios: [0.1]", "poison_ratios: [0]", ["poison_ratios[0]", "greater than 0"]),
        ("clean_fractions: [0.05]", "clean_fractions: [-0.05]", ["clean_fractions[0]", "greater than 0"]),
        ("{name: blended, alpha: 0.1}", "{name: blended, alpha: 1.5}", ["attacks[1].alpha: alpha must be in (0, 1], got 1.5"]),
        ("{name: ft, epochs: 1}", "{name: ft, epochs: many}", ["defenses[1].epochs", "valid integer", "'many'"]),
        ("seeds: [0]", "seeds: []", ["seeds", "at least 1 item"]),
        ("defenses: [none, {name: ft, epochs: 1}]", "defenses: []", ["defenses", "at least 1 item"]),
        ("target: {mode: all2one, label: 0}", "target: {mode: all2some}", ["target.mode", "'all2one' or 'all2all'"]),
        ("target: {mode: all2one, label: 0}", "target: {label: 10}", ["target.label: 10 is not a class of digits (0..9)"]),
        ("train: {epochs: 1}", "train: {epochs: 1}\nexclude: [{atack: badnets}]", ["exclude[0]: unknown key 'atack'"]),
        ("{name: ft, epochs: 1}", "{epochs: 1}", ["defenses[1]: a method given as a mapping needs a 'name' key"]),
        ("datasets: [digits]", "datasets: [digits, digits]", ["datasets[1]: 'digits' is listed twice"]),
    ],
)
def test_invalid_grid_names_place_and_allowed(tmp_path, old, new, expected):
    assert old in VALID
    message = error_of(tmp_path, VALID.replace(old, new, 1))
    assert message.startswith(str(tmp_path / "grid.yaml"))
    for fragment in expected:
        assert fragment in message, message


def test_missing_required_key(tmp_path):
    message = error_of(tmp_path, VALID.replace("archs: [small_cnn]\n", ""))
    assert "archs: required key is missing" in message


def test_yaml_syntax_error_gives_line(tmp_path):
    message = error_of(tmp_path, VALID.replace("seeds: [0]", "seeds: [0"))
    assert "YAML syntax error at line" in message


def test_missing_file(tmp_path):
    with pytest.raises(GridError, match="no such grid file"):
        load_grid(tmp_path / "absent.yaml")


def test_yaml_is_never_evaluated(tmp_path):
    message = error_of(tmp_path, VALID.replace("seeds: [0]", "seeds: !!python/object/apply:os.system ['true']"))
    assert "YAML syntax error" in message or "could not determine a constructor" in message


def test_grid_hash_ignores_formatting_but_not_content(tmp_path):
    a = load_grid(write(tmp_path, VALID))
    b = load_grid(write(tmp_path, VALID.replace("{name: ft, epochs: 1}", "{name: ft, epochs: 1, lr: 0.01}") + "\n# note\n"))
    c = load_grid(write(tmp_path, VALID.replace("epochs: 1}", "epochs: 2}", 1)))
    assert a.hash == b.hash
    assert a.hash != c.hash


def test_labels_only_add_params_where_names_repeat(tmp_path):
    grid = load_grid(write(tmp_path, VALID.replace("[badnets, {name: blended, alpha: 0.1}]", "[{name: blended, alpha: 0.1}, blended]")))
    assert [a.label for a in grid.attacks] == ["blended(alpha=0.1)", "blended(alpha=0.2)"]
    assert [d.label for d in grid.defenses] == ["none", "ft"]


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("grids/*.yaml")))
def test_shipped_grids_are_valid(path):
    assert load_grid(path).name == path.stem


def test_clean_label_ratio_the_target_class_cannot_supply(tmp_path, monkeypatch):
    from attacks.blended import Blended

    monkeypatch.setattr(Blended, "clean_label", True)  # stands in for a clean-label attack
    ok = VALID.replace("poison_ratios: [0.1]", "poison_ratios: [0.09]")  # 129 of class 0's 142
    load_grid(write(tmp_path, ok))
    message = error_of(tmp_path, VALID)  # 0.1 of 1438 = 144 > 142
    assert "attacks[1]: clean-label blended at poison ratio 0.1 needs 144 training images of target class 0 of digits, which has 142" in message


def test_clean_label_ratio_check_skips_combinations_excluded_whole(tmp_path, monkeypatch):
    from attacks.blended import Blended

    monkeypatch.setattr(Blended, "clean_label", True)
    excluded = VALID + "exclude:\n  - {attack: blended, poison_ratio: 0.1}\n"
    grid = load_grid(write(tmp_path, excluded))
    assert all(cell.attack.name != "blended" for cell in expand(grid))
    partial = VALID + "exclude:\n  - {attack: blended, poison_ratio: 0.1, defense: ft}\n"  # leaves the none cells
    assert "clean-label blended at poison ratio 0.1" in error_of(tmp_path, partial)
