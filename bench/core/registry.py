"""Named registries of methods: one class, one instance per kind of method.

A registry maps a grid name (``"badnets"``) to the object registered under it.
The file that defines a method, the name it is registered under and its key in a
grid file are the same string.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that no entry of a registry carries."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        self.kind, self.name, self.known = kind, name, known
        self.message = f"unknown {kind} {name!r}{hint} (known: {', '.join(known)})"
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


def _load_builtin_methods() -> None:
    """Import the packages whose modules register the built-in methods."""
    import attacks  # noqa: F401  (import registers)
    import bench.core.archs  # noqa: F401
    import bench.core.datasets  # noqa: F401
    import defenses  # noqa: F401


DATASETS: Registry = Registry("dataset")
ARCHS: Registry = Registry("architecture")
ATTACKS: Registry = Registry("attack")
DEFENSES: Registry = Registry("defense")
