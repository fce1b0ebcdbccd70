"""The HTML report: one self-contained page with the leaderboards, the plots, the grid and the provenance.

``to_html(df, options, grid_text=..., images=...)`` is pure: rows, the grid file's text
and already rendered PNG bytes in, one page of text out. The page is the Jinja template
``report.html.j2`` over plain-text values, which the environment escapes with
``html.escape``. Images are embedded as base64 ``data:`` URIs and the CSS is inline; the
page loads nothing else and runs no script.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import jinja2
import numpy as np
import pandas as pd

import bench
from bench.report.provenance import PROVENANCE_COLUMNS, provenance
from bench.report.tables import HEADERS, ReportOptions, Table, leaderboard_tables
from bench.report.text import PLAIN, Footer, caption, entry_texts, footer_bold, footer_texts, footers, legend

TEMPLATE = Path(__file__).with_name("report.html.j2")


@dataclass(frozen=True)
class Image:
    """A rendered figure: PNG bytes, a title, and the names of the files it was also written to."""

    title: str
    png: bytes
    files: tuple[str, ...] = ()


class Cell(NamedTuple):
    text: str
    bold: bool
    classes: str = ""  # space-separated; empty: no class attribute


class Row(NamedTuple):
    label: str
    cells: list[Cell]


class HtmlTable(NamedTuple):
    """What the template shows of one leaderboard table."""

    anchor: str
    caption: str
    width: int  # columns per defense group
    defenses: tuple[str, ...]
    headers: list[str]  # one per column
    rows: list[Row]  # attacks, then Average
    footers: list[Row]  # one cell per defense


class Figure(NamedTuple):
    title: str
    data: str  # base64 of the PNG bytes
    files: tuple[str, ...]


# Row column → readable axis name, in grid order.
_GRID_AXES = (
    ("dataset", "datasets"),
    ("arch", "architectures"),
    ("attack_label", "attacks"),
    ("poison_ratio", "poison ratios"),
    ("target_mode", "target modes"),
    ("target_label", "target labels"),
    ("defense_label", "defenses"),
    ("clean_fraction", "clean fractions"),
    ("seed", "seeds"),
)
_SORTED_AXES = frozenset({"poison_ratio", "clean_fraction", "seed", "target_label"})


def to_html(
    df: pd.DataFrame,
    options: ReportOptions | None = None,
    *,
    grid_text: str | None = None,
    images: Sequence[Image] = (),
) -> str:
    """Rows (+ the grid file's text, + rendered figures) → one self-contained HTML page."""
    options = options or ReportOptions()
    tables = leaderboard_tables(df, options)
    about = provenance(df)
    return _environment().get_template(TEMPLATE.name).render(
        names=", ".join(about.get("grid", [])) or "results",
        summary=_summary(about, tables, images),
        key=legend(options, PLAIN, "bold"),
        tables=[_html_table(table) for table in tables],
        images=[Figure(i.title, base64.b64encode(i.png).decode("ascii"), tuple(i.files)) for i in images],
        axes=_grid_axes(df),
        grid_text=grid_text,
        provenance=_provenance_rows(about),
    )


def _environment() -> jinja2.Environment:
    """Loads the template next to this module; every ``{{ }}`` value is escaped with ``html.escape``."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent),
        autoescape=False,  # jinja's own escaping writes quotes as &#34;, not &quot;
        finalize=lambda value: html.escape(str(value)),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def _summary(about: dict, tables: Sequence[Table], images: Sequence[Image]) -> str:
    status = ", ".join(f"{n} {s}" for s, n in about.get("status", {}).items())
    return (
        f"{about['rows']} result rows ({status or 'none'}); {len(tables)} tables, {len(images)} plots; "
        f"written by bench {bench.__version__}."
    )


def _html_table(table: Table) -> HtmlTable:
    """What the template shows of one leaderboard table."""
    texts = entry_texts(table, PLAIN)
    cells = np.stack([texts.to_numpy(object), table.statistic("bold").to_numpy(object), _classes(table)], axis=-1)
    anchor = "table-" + re.sub(
        r"[^A-Za-z0-9_.-]+", "-", f"{table.dataset}-{table.arch}-rho{table.poison_ratio:g}-frac{table.clean_fraction:g}"
    )
    return HtmlTable(
        anchor=anchor,
        caption=caption(table),
        width=len(table.metrics),
        defenses=table.defenses,
        headers=[HEADERS[m] for _, m in texts.columns],
        rows=[Row(label, [Cell(*cell) for cell in row]) for label, row in zip(table.rows, cells.tolist())],
        footers=[Row(f.label, _footer_cells(f, table.defenses)) for f in footers(table)],
    )


def _footer_cells(footer: Footer, defenses: Sequence[str]) -> list[Cell]:
    return [Cell(*cell) for cell in zip(footer_texts(footer, defenses, PLAIN.dash), footer_bold(footer, defenses))]


def _classes(table: Table) -> np.ndarray:
    """Class attribute of every entry (rows × columns): its status where it has no value (say why),
    then ``group-start`` in a group's first column; space-separated, empty for neither."""
    statuses = table.statistic("status")
    status = np.where(np.isfinite(table.statistic("mean").to_numpy(float)), "", statuses.to_numpy(object))
    start = statuses.columns.get_level_values("metric") == table.metrics[0]
    return status + np.where((status != "") & start, " ", "") + np.where(start, "group-start", "")


def _grid_axes(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(axis name, its values as text) of every grid axis the rows have."""
    axes = []
    for column, name in _GRID_AXES:
        if column in df.columns:
            values = pd.unique(df[column].dropna())
            if column in _SORTED_AXES:
                values = sorted(values)
            axes.append((name, ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)))
    return axes


def _provenance_rows(about: dict) -> list[tuple[str, str]]:
    """(name, value) of every provenance fact present."""
    rows = [("result rows", str(about["rows"]))]
    if "status" in about:
        rows.append(("status", ", ".join(f"{s}: {n}" for s, n in about["status"].items())))
    for column, name in PROVENANCE_COLUMNS.items():
        if column in about:
            rows.append((name, ", ".join(about[column]) or "—"))
    if "finished_first" in about:
        rows.append(("finished", f"{about['finished_first']} to {about['finished_last']}"))
    return rows
