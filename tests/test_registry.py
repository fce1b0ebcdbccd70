"""Registries: one entry per name, helpful errors, fnmatch listing, name = module file name."""

from __future__ import annotations

import pytest

from bench.core.registry import ARCHS, ATTACKS, DATASETS, DEFENSES, Registry, UnknownNameError


def filled(*names: str) -> Registry:
    registry: Registry = Registry("thing")
    for name in names:
        registry.register(name)(object())
    return registry


def test_registering_a_name_twice_raises_and_keeps_the_first_entry():
    registry: Registry = Registry("thing")
    first, second = object(), object()
    assert registry.register("a")(first) is first  # usable as a decorator: returns the entry
    with pytest.raises(ValueError, match="'a'.*twice"):
        registry.register("a")(second)
    assert registry.get("a") is first


def test_registering_a_builtin_name_again_raises():
    with pytest.raises(ValueError, match="badnets"):
        ATTACKS.register("badnets")(object())
    assert ATTACKS.get("badnets").__name__ == "BadNets"


def test_unknown_name_suggests_a_close_match():
    with pytest.raises(UnknownNameError) as info:
        ATTACKS.get("badnet")
    error = info.value
    assert isinstance(error, KeyError)  # callers may catch it as a missing key
    assert "did you mean 'badnets'" in str(error)
    assert "attack" in str(error)
    assert error.name == "badnet" and "blended" in error.known


def test_unknown_name_without_a_close_match_lists_the_known_names():
    with pytest.raises(UnknownNameError) as info:
        DEFENSES.get("qqqqqqq")
    assert "did you mean" not in str(info.value)
    assert info.value.known == DEFENSES.names()
    assert ", ".join(DEFENSES.names()) in str(info.value)


def test_names_match_fnmatch_patterns_sorted_and_case_sensitive():
    registry = filled("ftsam", "nad", "ft", "fp", "anp")
    assert registry.names() == ["anp", "fp", "ft", "ftsam", "nad"]
    assert registry.names("ft*") == ["ft", "ftsam"]
    assert registry.names("f?") == ["fp", "ft"]
    assert registry.names("*a*") == ["anp", "ftsam", "nad"]
    assert registry.names("FT*") == []
    assert registry.names("zz*") == []
    assert list(registry) == registry.names()
    assert "ft" in registry and "f" not in registry


REGISTRIES = [(ATTACKS, "attacks"), (DEFENSES, "defenses"), (ARCHS, "bench.core.archs"), (DATASETS, "bench.core.datasets")]


@pytest.mark.parametrize(
    ("registry", "package", "name"),
    [pytest.param(reg, pkg, name, id=f"{reg.kind}-{name}") for reg, pkg in REGISTRIES for name in reg.names()],
)
def test_registered_name_is_its_module_file_name(registry, package, name):
    assert registry.get(name).__module__ == f"{package}.{name}"


@pytest.mark.parametrize(("registry", "package"), REGISTRIES, ids=[pkg for _, pkg in REGISTRIES])
def test_every_registry_has_entries(registry, package):
    assert registry.names(), f"nothing registered from {package}"
