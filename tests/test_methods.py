"""The methods card: `bench methods`, docs/methods.md kept in step with the declarations, and the README's table."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from bench.cli import main
from bench.core.registry import ARCHS, ATTACKS, DATASETS, DEFENSES
from bench.methods import card_markdown, cards

REPO = Path(__file__).resolve().parents[1]
REGENERATE = "bench methods --markdown > docs/methods.md"


def test_docs_methods_md_is_the_generated_card():
    written = (REPO / "docs" / "methods.md").read_text(encoding="utf-8")
    assert written == card_markdown(), f"docs/methods.md is stale: run `{REGENERATE}`"


def test_every_registered_method_has_a_card_with_a_summary():
    names = {(card.kind, card.name) for card in cards()}
    expected = {(kind, name) for kind, reg in (("attacks", ATTACKS), ("defenses", DEFENSES), ("architectures", ARCHS),
                                               ("datasets", DATASETS)) for name in reg.names()}
    assert names == expected
    assert all(card.summary for card in cards())


def test_bench_methods_prints_parameters_bounds_and_provenance_of_the_named_methods():
    result = CliRunner().invoke(main, ["methods", "blended", "ft"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("blended (attack):")
    assert "alpha: float = 0.2, (0, 1]" in result.output and "from BackdoorBench:" in result.output
    assert "\n\nft (defense):" in result.output and "ftsam" not in result.output


def test_bench_methods_names_an_unknown_method_and_exits_2():
    result = CliRunner().invoke(main, ["methods", "blendd"])
    assert result.exit_code == 2
    assert "'blendd'" in result.output and "did you mean 'blended'" in result.output


def readme_names(kind_prefix: str) -> set[str]:
    """The backticked names in the README's methods table rows whose kind starts with ``kind_prefix``."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text[text.index("## Methods") :]
    names = set()
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith(kind_prefix):
            names |= set(re.findall(r"`([a-z0-9_]+)`", cells[1]))
    return names


def test_the_readme_methods_table_lists_exactly_the_registered_names():
    assert readme_names("datasets") == set(DATASETS.names())
    assert readme_names("architectures") == set(ARCHS.names())
    assert readme_names("attacks") == set(ATTACKS.names())
    assert readme_names("defenses") == set(DEFENSES.names())
