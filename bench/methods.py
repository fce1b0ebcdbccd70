"""The methods card: every registered method with its parameters, defaults, bounds and provenance.

Read from the declarations (``bench.core.declared``), never written by hand:
``card_markdown()`` is ``docs/methods.md``; ``card_text(names)`` is what ``bench methods``
prints. A provenance says which reference a default follows (BackdoorBench, the
authors' code, the paper) or that it is bench's own choice, and where or why.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from bench.core import ARCHS, ATTACKS, DATASETS, DEFENSES, Declared, Registry, declared, did_you_mean, is_heavy

KINDS: tuple[tuple[str, Registry], ...] = (
    ("attacks", ATTACKS),
    ("defenses", DEFENSES),
    ("architectures", ARCHS),
    ("datasets", DATASETS),
)
HEADER = ("parameter", "type", "default", "bounds", "meaning", "provenance")


@dataclass(frozen=True)
class MethodCard:
    """One registered method: its kind, grid name, one-line summary, traits and declared parameters."""

    kind: str
    name: str
    summary: str
    traits: tuple[str, ...]
    params: tuple[Declared, ...]


def summary(entry: Any) -> str:
    """The first line of the docstring of the module that registers ``entry``."""
    module = inspect.getmodule(entry)
    doc = inspect.getdoc(module) or inspect.getdoc(entry) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def attack_traits(name: str, cls: Any) -> tuple[str, ...]:
    labels = "clean-label (all2one)" if cls.clean_label else "dirty-label, " + " and ".join(cls.label_modes)
    training = "poisons the training set" if cls.poisons_dataset else "controls training (poisons batches)"
    return (labels, training)


def defense_traits(name: str, cls: Any) -> tuple[str, ...]:
    return ("needs clean data" if cls.data == "clean" else "data-free",)


def arch_traits(name: str, factory: Any) -> tuple[str, ...]:
    return ("ImageNet-scale: slow on a CPU",) if is_heavy(name) else ()


TRAITS: dict[str, Callable[[str, Any], tuple[str, ...]]] = {
    "attacks": attack_traits,
    "defenses": defense_traits,
    "architectures": arch_traits,
}


def cards() -> list[MethodCard]:
    """Every registered method, attacks first, then defenses, architectures and datasets, each sorted by name."""
    found = []
    for kind, registry in KINDS:
        for name in registry.names():
            entry = registry.get(name)
            params = declared(entry.Params) if hasattr(entry, "Params") else ()
            traits = TRAITS[kind](name, entry) if kind in TRAITS else ()
            found.append(MethodCard(kind, name, summary(entry), traits, params))
    return found


def select(names: Iterable[str]) -> list[MethodCard]:
    """The cards of ``names`` (all when empty); raises ``KeyError`` naming an unknown name and a close match."""
    every = cards()
    by_name: dict[str, list[MethodCard]] = {}
    for card in every:
        by_name.setdefault(card.name, []).append(card)
    chosen = []
    for name in names:
        if name not in by_name:
            raise KeyError(f"no registered method is called {name!r}{did_you_mean(name, by_name)}")
        chosen += by_name[name]
    return chosen if names else every


def type_name(annotation: Any) -> str:
    """A short readable type: ``int``, ``float | None``, ``'cosine' | 'constant'``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(v) for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in typing.get_args(annotation))}]"
    if annotation is Ellipsis:
        return "..."
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def row(field: Declared) -> tuple[str, ...]:
    return (
        field.name,
        type_name(field.type),
        repr(field.default),
        field.range.describe() if field.range else "",
        field.doc,
        field.source.describe() if field.source else "",
    )


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def card_markdown() -> str:
    """Every method as markdown: ``docs/methods.md``."""
    lines = [
        "# Methods",
        "",
        "Every registered method, its parameters (grid keys), defaults, bounds and provenance: the reference",
        "each default follows (BackdoorBench, the authors' code, the paper) or bench's own choice, and where",
        "or why. Generated from the declarations by `bench methods --markdown > docs/methods.md`; a test fails",
        "when this file is stale.",
    ]
    for kind, _ in KINDS:
        lines += ["", f"## {kind.capitalize()}"]
        for card in (c for c in cards() if c.kind == kind):
            lines += ["", f"### `{card.name}`", "", _escape(card.summary)]
            if card.traits:
                lines += ["", "*" + "; ".join(card.traits) + "*"]
            if card.params:
                lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
                lines += ["| " + " | ".join(_escape(cell) for cell in row(field)) + " |" for field in card.params]
            elif kind in ("attacks", "defenses"):
                lines += ["", "No parameters."]
    return "\n".join(lines) + "\n"


def card_text(names: Iterable[str] = ()) -> str:
    """The cards of ``names`` (every method when empty) as plain text, for the terminal."""
    blocks = []
    for card in select(list(names)):
        head = f"{card.name} ({card.kind[:-1]}): {card.summary}"
        lines = [head, *(f"  {trait}" for trait in card.traits)]
        for field in card.params:
            name, kind, default, bounds, meaning, source = row(field)
            bounded = f", {bounds}" if bounds else ""
            lines.append(f"  {name}: {kind} = {default}{bounded}" + (f"  ({meaning})" if meaning else ""))
            lines.append(f"      from {source}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
