"""Import every module of a package so that its registrations run."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def import_submodules(package: ModuleType, skip: frozenset[str] = frozenset({"base"})) -> list[str]:
    """Import ``package``'s direct submodules except ``skip``; return their names, sorted."""
    names = sorted(
        info.name
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_") and info.name not in skip
    )
    for name in names:
        importlib.import_module(f"{package.__name__}.{name}")
    return names
