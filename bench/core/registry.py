"""Named registries of methods: one class, one instance per kind of method.

A registry maps a grid name (``"badnets"``) to the object registered under it.
The file that defines a method, the name it is registered under and its key in a
grid file are the same string. ``create_attack`` and ``create_defense`` build a
registered method from its name and parameter values.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, Iterator, TypeVar

if TYPE_CHECKING:  # the method packages import this module; only the annotations name them
    from attacks.base import Attack
    from bench.core.data import DatasetSpec
    from defenses.base import Defense

T = TypeVar("T")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` naming the entry of ``known`` closest to ``name``; ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class UnknownNameError(KeyError):
    """A name that no entry of a registry carries."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind, self.name, self.known = kind, name, known
        self.message = f"unknown {kind} {name!r}{did_you_mean(name, known)} (known: {', '.join(known)})"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class Registry(Generic[T]):
    """Name → entry. Registering a name twice is an error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@ATTACKS.register("badnets")`` on a class or function."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        _load_builtin_methods()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching an fnmatch ``pattern``, sorted."""
        _load_builtin_methods()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        _load_builtin_methods()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


BUILTIN_PACKAGES = ("attacks", "bench.core.archs", "bench.core.datasets", "defenses")


def _load_builtin_methods() -> None:
    """Import the packages whose modules register the built-in methods (importing registers them)."""
    for package in BUILTIN_PACKAGES:
        importlib.import_module(package)


DATASETS: Registry = Registry("dataset")
ARCHS: Registry = Registry("architecture")
ATTACKS: Registry = Registry("attack")
DEFENSES: Registry = Registry("defense")


def create_attack(name: str, spec: DatasetSpec, **params: Any) -> Attack:
    """The registered attack ``name`` for images of ``spec``; ``params`` are fields of its ``Params`` (defaults for the rest)."""
    cls = ATTACKS.get(name)
    return cls(cls.Params(**params), spec)


def create_defense(name: str, **params: Any) -> Defense:
    """The registered defense ``name``; ``params`` are fields of its ``Params`` (defaults for the rest)."""
    cls = DEFENSES.get(name)
    return cls(cls.Params(**params))
