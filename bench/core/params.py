"""Declared parameters: each field's bounds and provenance live in its annotation, checked in one place.

A method's parameters are a frozen dataclass deriving from ``Params``, one field per
grid key::

    @dataclass(frozen=True)
    class BlendedParams(Params):
        alpha: Annotated[float, Range("(0, 1]"), BackdoorBench("config/attack/blended/default.yaml")] = 0.2
        \"\"\"blend weight of the pattern\"\"\"

- the docstring below the field: what it means, with its unit.
- ``Range("(0, 1]")``: the bounds of a number, in interval notation (``"> 0"``, ``">= 1"``,
  ``"[0, 1)"``, ``"any"``). NaN is never within bounds, and ±inf only where the notation
  closes an infinite end (``"(0, inf]"``). Every int and float field declares one.
- Provenance, exactly one per field: ``BackdoorBench(where)``, ``AuthorsCode(where)``,
  ``Paper(where)`` (the reference the default follows) or ``BenchOwn(why)`` (a choice
  of this project), with a one-line note.

A class's ``smoke`` (``{field: value}``) names the fields that set the cost of a run and
their values for a smoke run (the registry-generated tests run every method so). A
subclass that keeps an inherited field's default but takes it from another reference
says so in its ``sources`` (``{field: Source}``) instead of declaring the field again.

``Params.__post_init__`` checks every declared bound and ``Literal`` choice (``ParamError``
names the field);
rules that tie several fields together go in ``check``. ``declared(cls)`` lists the
declarations, for the grid loader, ``bench methods`` and the tests.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import re
import textwrap
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping

Reference = Literal["backdoorbench", "authors", "paper", "bench"]
REFERENCE_NAMES: dict[str, str] = {
    "backdoorbench": "BackdoorBench",
    "authors": "the authors' code",
    "paper": "the paper",
    "bench": "bench's own",
}


class ParamError(ValueError):
    """A parameter outside its declared bounds, or a broken rule between parameters; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Range:
    """Bounds of a number in interval notation: ``"(0, 1]"``, ``"[0, 1)"``, ``"> 0"``, ``">= 1"``, ``"any"``.

    NaN is never within bounds. ±inf is within only where the notation closes an
    infinite end: ``"(0, inf]"`` takes inf (e.g. "inf: never"), ``"> 0"`` does not.
    """

    spec: str
    gt: float | None = field(init=False, default=None)
    ge: float | None = field(init=False, default=None)
    lt: float | None = field(init=False, default=None)
    le: float | None = field(init=False, default=None)
    allow_inf: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        for name, value in _parse_bounds(self.spec).items():
            object.__setattr__(self, name, value)

    def contains(self, value: float) -> bool:
        if value != value or (math.isinf(value) and not self.allow_inf):
            return False
        return (
            (self.gt is None or value > self.gt)
            and (self.ge is None or value >= self.ge)
            and (self.lt is None or value < self.lt)
            and (self.le is None or value <= self.le)
        )

    def describe(self) -> str:
        """The notation, e.g. ``(0, 1]``, ``>= 1``, ``any``."""
        return self.spec


_HALF_LINE = re.compile(r"^(>=|<=|>|<) *([-+0-9.eE]+)$")
_INTERVAL = re.compile(r"^([(\[]) *(-inf|[-+0-9.eE]+) *, *(inf|[-+0-9.eE]+) *([)\]])$")
_HALF_NAMES = {">": "gt", ">=": "ge", "<": "lt", "<=": "le"}


def _parse_bounds(spec: str) -> dict[str, Any]:
    """``{gt|ge|lt|le: end, allow_inf: bool}`` of a bounds notation; ``ValueError`` naming the notation otherwise."""
    if spec == "any":
        return {}
    if match := _HALF_LINE.match(spec):
        return {_HALF_NAMES[match.group(1)]: float(match.group(2))}
    if match := _INTERVAL.match(spec):
        opening, low, high, closing = match.groups()
        bounds: dict[str, Any] = {"allow_inf": (low == "-inf" and opening == "[") or (high == "inf" and closing == "]")}
        if low != "-inf":
            bounds["gt" if opening == "(" else "ge"] = float(low)
        if high != "inf":
            bounds["lt" if closing == ")" else "le"] = float(high)
        if low != "-inf" and high != "inf" and float(low) >= float(high):
            raise ValueError(f"bounds {spec!r} hold no number: the lower end is not below the upper")
        return bounds
    raise ValueError(f"bounds {spec!r} are not of the form '(a, b]', '[a, b)', '> a', '>= a', '< b', '<= b' or 'any'")


@dataclass(frozen=True)
class Source:
    """Where a field's default comes from: a reference and a one-line note (where in it, or why)."""

    reference: Reference
    note: str

    def describe(self) -> str:
        return f"{REFERENCE_NAMES[self.reference]}: {self.note}"


def BackdoorBench(where: str) -> Source:  # noqa: N802 (reads as a declaration)
    """The default is BackdoorBench's (``where``: its file or config)."""
    return Source("backdoorbench", where)


def AuthorsCode(where: str) -> Source:  # noqa: N802
    """The default is the method authors' public code's (``where``: repository and file)."""
    return Source("authors", where)


def Paper(where: str) -> Source:  # noqa: N802
    """The default is the paper's (``where``: section or table)."""
    return Source("paper", where)


def BenchOwn(why: str) -> Source:  # noqa: N802
    """The default is this project's choice (``why``: the reason)."""
    return Source("bench", why)


@dataclass(frozen=True)
class Declared:
    """One field of a ``Params`` class as declared."""

    name: str
    type: Any  # the annotation without its metadata
    default: Any
    doc: str
    range: Range | None
    source: Source | None
    smoke: Any  # the smoke-run value of a cost-controlling field; None for the others


@functools.cache
def declared(cls: type) -> tuple[Declared, ...]:
    """The fields of the dataclass ``cls``, in order, with their declared metadata."""
    hints = typing.get_type_hints(cls, include_extras=True)
    sources: Mapping[str, Source] = getattr(cls, "sources", {})
    fields = []
    for member in dataclasses.fields(cls):
        hint = hints[member.name]
        base, metadata = hint, ()
        if typing.get_origin(hint) is typing.Annotated:
            base, *rest = typing.get_args(hint)
            metadata = tuple(rest)
        fields.append(
            Declared(
                name=member.name,
                type=base,
                default=member.default if member.default is not dataclasses.MISSING else None,
                doc=_attribute_docs(cls).get(member.name, ""),
                range=_one(metadata, Range),
                source=sources.get(member.name) or _one(metadata, Source),
                smoke=getattr(cls, "smoke", {}).get(member.name),
            )
        )
    return tuple(fields)


@functools.cache
def _attribute_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}``: the string literal right below a field's declaration, in ``cls`` or a base."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        except (OSError, TypeError, SyntaxError, IndexError, AttributeError):
            continue  # a built-in base, or source that is not at hand
        for node, following in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and _is_text(following):
                docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs


def _is_text(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _one(metadata: tuple, kind: type) -> Any:
    found = [m for m in metadata if isinstance(m, kind)]
    if len(found) > 1:
        raise TypeError(f"a field declares {len(found)} {kind.__name__}s; one at most")
    return found[0] if found else None


def check_declared(params: object) -> None:
    """Raise ``ParamError`` for the first field of ``params`` outside its declared ``Range`` or ``Literal`` choices."""
    for member in declared(type(params)):
        value = getattr(params, member.name)
        choices = literal_choices(member.type)
        if choices and value not in choices:
            raise ParamError(member.name, f"{member.name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
        if member.range is None or value is None or isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)) or not member.range.contains(value):
            raise ParamError(member.name, f"{member.name} must be {_wanted(member.range, value)}, got {value!r}")


def literal_choices(annotation: Any) -> tuple[Any, ...]:
    """The values a ``Literal[...]`` annotation allows (``()`` for any other annotation)."""
    return typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()


def _wanted(bounds: Range, value: object) -> str:
    text = bounds.describe()
    if text == "any":
        return "a finite number"
    where = f"in {text}" if text[0] in "([" else text
    finite = isinstance(value, float) and math.isinf(value) and not bounds.allow_inf
    return f"a finite number {where}" if finite else where


@dataclass(frozen=True)
class Params:
    """Base of every method's parameters: declared bounds are checked on construction."""

    # Provenance of inherited fields whose (unchanged) default this class takes from another reference.
    sources: ClassVar[Mapping[str, Source]] = {}
    # The cost-controlling fields and their smoke-run values.
    smoke: ClassVar[Mapping[str, Any]] = {}

    def __post_init__(self) -> None:
        check_declared(self)
        self.check()

    def check(self) -> None:
        """Rules between fields (default: none); raise ``ParamError`` naming the field to fix."""


@dataclass(frozen=True)
class NoParams(Params):
    """For methods without parameters."""


def field_values(params: object) -> dict[str, Any]:
    """``{field: value}`` of a ``Params`` instance, one level deep (values as they are)."""
    return {member.name: getattr(params, member.name) for member in dataclasses.fields(params)}


def smoke_values(cls: type) -> dict[str, Any]:
    """``{field: smoke value}`` for the cost-controlling fields of the ``Params`` class ``cls``."""
    return {member.name: member.smoke for member in declared(cls) if member.smoke is not None}
