"""Declared parameters, generated from the registries: every bound a method declares is enforced,
where the grid reports it, and every field says where its default comes from."""

from __future__ import annotations

import math
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Annotated

import pytest

from bench.core.params import BenchOwn, Declared, ParamError, Params, Range, Source, declared, literal_choices, smoke_values
from bench.core.registry import ATTACKS, DEFENSES
from bench.core.train import TrainConfig
from bench.grid import GridError, load_grid

CLASSES: dict[str, type] = {
    **{f"attack:{name}": ATTACKS.get(name).Params for name in ATTACKS.names()},
    **{f"defense:{name}": DEFENSES.get(name).Params for name in DEFENSES.names()},
    "train": TrainConfig,
}
BOUNDED = [
    pytest.param(cls, field, id=f"{label}.{field.name}")
    for label, cls in CLASSES.items()
    for field in declared(cls)
    if field.range is not None
]


def is_number(field: Declared) -> bool:
    """Whether the field holds an int or a float (possibly optional, not a tuple of them)."""
    union = typing.get_origin(field.type) in (typing.Union, types.UnionType)
    options = typing.get_args(field.type) if union else (field.type,)
    return any(option in (int, float) for option in options)


def outside(bounds: Range, integer: bool) -> list[float]:
    """Values just past each declared end, and the non-finite ones the bounds refuse."""
    step = (lambda v, d: v + d) if integer else (lambda v, d: math.nextafter(v, math.inf * d))
    values = [
        *([bounds.gt] if bounds.gt is not None else []),
        *([step(bounds.ge, -1)] if bounds.ge is not None else []),
        *([bounds.lt] if bounds.lt is not None else []),
        *([step(bounds.le, 1)] if bounds.le is not None else []),
    ]
    if not integer:
        values.append(math.nan)
        if not bounds.allow_inf:
            values += [v for v in (math.inf, -math.inf) if bounds.contains(math.copysign(1e308, v))]
    return values


@pytest.mark.parametrize("label", CLASSES)
def test_every_field_declares_its_provenance_and_every_number_its_bounds(label):
    cls = CLASSES[label]
    assert issubclass(cls, Params)
    for field in declared(cls):
        assert isinstance(field.source, Source), f"{label}.{field.name} declares no provenance"
        assert field.source.note.strip() and "\n" not in field.source.note, f"{label}.{field.name}: a one-line note"
        assert field.doc, f"{label}.{field.name} declares no description"
        if is_number(field):
            assert field.range is not None, f"{label}.{field.name} is a number without declared bounds"


@pytest.mark.parametrize("label", CLASSES)
def test_defaults_and_smoke_values_are_within_the_bounds(label):
    cls = CLASSES[label]
    cls()  # construction checks every declared bound
    smoke = smoke_values(cls)
    assert set(smoke) <= {f.name for f in declared(cls)}
    cls(**smoke)


@pytest.mark.parametrize(("cls", "field"), BOUNDED)
def test_each_declared_bound_is_enforced_and_names_its_field(cls, field):
    integer = field.type is int or (int in typing.get_args(field.type) and float not in typing.get_args(field.type))
    for value in outside(field.range, integer):
        assert not field.range.contains(value)
        with pytest.raises(ParamError) as error:
            cls(**{field.name: value})
        assert error.value.field == field.name and field.name in str(error.value)


CHOICES = [
    pytest.param(cls, field, id=f"{label}.{field.name}")
    for label, cls in CLASSES.items()
    for field in declared(cls)
    if literal_choices(field.type)
]


@pytest.mark.parametrize(("cls", "field"), CHOICES)
def test_each_declared_choice_is_enforced_and_names_its_field(cls, field):
    for value in literal_choices(field.type):
        cls(**{field.name: value})
    with pytest.raises(ParamError, match=f"{field.name} must be one of") as error:
        cls(**{field.name: "not-a-choice"})
    assert error.value.field == field.name


@pytest.mark.parametrize(("cls", "field"), BOUNDED)
def test_each_inclusive_end_and_allowed_infinity_is_accepted(cls, field):
    bounds = field.range
    for end in (bounds.ge, bounds.le):
        if end is not None:
            assert bounds.contains(end)
    if bounds.allow_inf:
        assert any(bounds.contains(v) for v in (math.inf, -math.inf))


def grid_with(kind: str, name: str, field: str, value: float) -> str:
    methods = {"attacks": "[badnets]", "defenses": "[none]"}
    methods[kind] = f"[{{name: {name}, {field}: {value!r}}}]".replace("nan", ".nan").replace("inf", ".inf")
    return textwrap.dedent(f"""\
        name: probe
        seeds: [0]
        datasets: [digits]
        archs: [small_cnn]
        attacks: {methods["attacks"]}
        poison_ratios: [0.05]
        defenses: {methods["defenses"]}
        clean_fractions: [0.05]
        """)


def first_bound(cls: type) -> tuple[Declared, float] | None:
    for field in declared(cls):
        if field.range is not None:
            integer = field.type is int
            values = [v for v in outside(field.range, integer) if not (isinstance(v, float) and math.isnan(v))]
            if values:
                return field, values[0]
    return None


@pytest.mark.parametrize("label", [label for label in CLASSES if label != "train"])
def test_the_grid_reports_a_broken_bound_at_its_place(label, tmp_path):
    kind, name = label.split(":")
    found = first_bound(CLASSES[label])
    if found is None:
        pytest.skip(f"{label} declares no bounds")
    field, value = found
    path = tmp_path / "g.yaml"
    path.write_text(grid_with(f"{kind}s", name, field.name, value))
    with pytest.raises(GridError, match=rf"{kind}s\[0\]\.{field.name}: {field.name} must be"):
        load_grid(path)


def test_range_notation_ends_and_non_finite_values():
    unit = Range("(0, 1]")
    assert (unit.gt, unit.ge, unit.lt, unit.le, unit.allow_inf) == (0.0, None, None, 1.0, False)
    assert [unit.contains(v) for v in (0.0, 1e-12, 1.0, 1.0000001, math.nan, math.inf)] == [False, True, True, False, False, False]
    assert Range("[0, inf]").contains(math.inf) and not Range("[0, inf]").contains(-1.0)
    assert not Range("[0, inf)").contains(math.inf) and not Range(">= 0").contains(math.inf)
    assert Range("[-inf, 0]").contains(-math.inf) and not Range("[-inf, 0]").contains(0.5)
    assert Range("any").contains(-1e300) and not Range("any").contains(math.nan)
    assert [Range(s).contains(1.0) for s in ("> 1", ">= 1", "< 1", "<= 1")] == [False, True, False, True]


@pytest.mark.parametrize("spec", ["0..1", "(0, 1", "> x", "[1, 0", ">0 1", ""])
def test_a_malformed_bounds_notation_is_refused_at_declaration(spec):
    with pytest.raises(ValueError, match="not of the form"):
        Range(spec)


@dataclass(frozen=True)
class Pair(Params):
    low: Annotated[float, Range(">= 0"), BenchOwn("a test")] = 0.1
    """the lower end"""
    high: Annotated[float, Range(">= 0"), BenchOwn("a test")] = 0.5
    """the upper end"""

    def check(self) -> None:
        if self.low > self.high:
            raise ParamError("low", f"low must be <= high={self.high}, got {self.low}")


def test_field_descriptions_are_the_docstrings_below_the_fields():
    assert [(f.name, f.doc) for f in declared(Pair)] == [("low", "the lower end"), ("high", "the upper end")]


def test_a_rule_between_fields_names_the_field_to_fix():
    with pytest.raises(ParamError, match="low must be <= high") as error:
        Pair(low=0.9)
    assert error.value.field == "low"
    with pytest.raises(ParamError, match="high must be >= 0"):
        Pair(high=-1.0)
