"""Reports: pure functions from result rows (schema ``bench.rows``) to tables and figures.

``render(df, fmt)`` gives the leaderboard as text in one of ``FORMATS``;
``write_report(df, out_dir, fmt)`` writes it as ``leaderboard.<ext>`` next to the
sensitivity plots. ``leaderboard_tables(df)`` gives the tables as data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pandas as pd

from bench.report.plots import write_plots
from bench.report.tables import LeaderboardTable, leaderboard_tables, to_csv, to_latex, to_markdown

__all__ = ["FORMATS", "Format", "LeaderboardTable", "leaderboard_tables", "render", "write_report"]


@dataclass(frozen=True)
class Format:
    """A leaderboard renderer: rows → text, written to ``leaderboard.<extension>``."""

    extension: str
    render: Callable[[pd.DataFrame], str]


FORMATS: Mapping[str, Format] = MappingProxyType(
    {
        "markdown": Format("md", to_markdown),
        "latex": Format("tex", to_latex),
        "csv": Format("csv", to_csv),
    }
)


def _format(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; allowed: {', '.join(sorted(FORMATS))}")
    return FORMATS[fmt]


def render(df: pd.DataFrame, fmt: str) -> str:
    """The leaderboard of ``df`` (result rows) as text in format ``fmt`` (a key of ``FORMATS``)."""
    return _format(fmt).render(df)


def write_report(df: pd.DataFrame, out_dir: Path, fmt: str) -> list[Path]:
    """Write ``leaderboard.<ext>`` and the sensitivity plots (PNG and PDF) into ``out_dir``.

    Creates ``out_dir``; returns the written paths, the leaderboard first. An unknown
    ``fmt`` raises ValueError before anything is written.
    """
    spec = _format(fmt)
    text = spec.render(df)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / f"leaderboard.{spec.extension}"
    table.write_text(text, encoding="utf-8")
    return [table, *write_plots(df, out_dir)]
