"""The HTML report: one self-contained page with the leaderboards, the plots, the grid and the provenance.

``to_html(df, options, grid_text=..., images=...)`` is pure: rows, the grid file's text
and already rendered PNG bytes in, one page of text out. Images are embedded as base64
``data:`` URIs and the CSS is inline; the page loads nothing else and runs no script.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import pandas as pd

import bench
from bench.report.provenance import PROVENANCE_COLUMNS, provenance
from bench.report.tables import (
    FEWER_SEEDS_MARK,
    HEADERS,
    LeaderboardTable,
    ReportOptions,
    Style,
    caption,
    entry_text,
    footer_text,
    footers,
    leaderboard_tables,
    legend,
)


@dataclass(frozen=True)
class Image:
    """A rendered figure: PNG bytes, a title, and the names of the files it was also written to."""

    title: str
    png: bytes
    files: tuple[str, ...] = ()


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 2rem auto;
       max-width: 110rem; padding: 0 1rem; color: #1d1d1f; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.5rem; }
nav a { margin-right: 1rem; }
.key { color: #444; font-size: .9rem; max-width: 60rem; }
.scroll { overflow-x: auto; margin: 1rem 0 2rem; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: .9rem; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; caption-side: top; }
th, td { padding: .2rem .55rem; white-space: nowrap; }
table.leaderboard { border-top: 2px solid #000; border-bottom: 2px solid #000; }
table.leaderboard thead tr:last-child th { border-bottom: 1px solid #000; }
table.leaderboard th.group { border-bottom: 1px solid #888; text-align: center; }
table.leaderboard td { text-align: right; }
table.leaderboard th[scope=row] { text-align: left; font-weight: normal; }
table.leaderboard tr.average { border-top: 1px solid #000; }
table.leaderboard tr.footer td { text-align: center; color: #333; }
table.leaderboard tr.footer th[scope=row] { color: #333; }
table.leaderboard td.failed, table.leaderboard td.diverged { color: #b00020; font-style: italic; }
table.leaderboard td.missing { color: #888; }
td.group-start, th.group-start { border-left: 1px solid #ddd; }
table.plain th { text-align: left; vertical-align: top; } table.plain td { white-space: normal; }
table.plain th, table.plain td { border-bottom: 1px solid #eee; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9rem; color: #444; }
pre { background: #f6f6f6; padding: .8rem; overflow-x: auto; font-size: .85rem; }
""".strip()

HTML_STYLE = Style(" ± ", "—", FEWER_SEEDS_MARK, lambda s: f"<strong>{s}</strong>", html.escape)


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
    names = ", ".join(about.get("grid", [])) or "results"
    sections = [
        ("leaderboards", "Leaderboards", _leaderboards(tables, options)),
        ("plots", "Plots", _plots(images)),
        ("grid", "Grid", _grid(df, grid_text)),
        ("provenance", "Provenance", _provenance(about)),
    ]
    nav = " ".join(f'<a href="#{anchor}">{title}</a>' for anchor, title, _ in sections)
    body = "\n".join(f'<section id="{anchor}">\n<h2>{title}</h2>\n{content}\n</section>' for anchor, title, content in sections)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>bench report: {html.escape(names)}</title>",
            f"<style>\n{_CSS}\n</style>",
            "</head>",
            "<body>",
            f"<header><h1>Backdoor-defense leaderboard: {html.escape(names)}</h1>",
            f"<p>{_summary(about, tables, images)}</p>",
            f"<nav>{nav}</nav></header>",
            body,
            "</body>",
            "</html>",
            "",
        ]
    )


def _summary(about: dict, tables: Sequence[LeaderboardTable], images: Sequence[Image]) -> str:
    status = ", ".join(f"{n} {s}" for s, n in about.get("status", {}).items())
    return html.escape(
        f"{about['rows']} result rows ({status or 'none'}); {len(tables)} tables, {len(images)} plots; "
        f"written by bench {bench.__version__}."
    )


def _leaderboards(tables: Sequence[LeaderboardTable], options: ReportOptions) -> str:
    if not tables:
        return "<p>No results.</p>"
    key = legend(options, " ± ", "—", FEWER_SEEDS_MARK, "bold")
    return "\n".join([f'<p class="key">{html.escape(key)}</p>', *(_table(t, i) for i, t in enumerate(tables, 1))])


def _table(table: LeaderboardTable, number: int) -> str:
    style, width = HTML_STYLE, len(table.metrics)
    anchor = "table-" + re.sub(
        r"[^A-Za-z0-9_.-]+", "-", f"{table.dataset}-{table.arch}-rho{table.poison_ratio:g}-frac{table.clean_fraction:g}"
    )
    groups = "".join(
        f'<th scope="colgroup" colspan="{width}" class="group group-start">{html.escape(d)}</th>' for d in table.defenses
    )
    metrics = "".join(
        f'<th scope="col"{_start(i, width)}>{html.escape(HEADERS[m])}</th>'
        for i, (_, m) in enumerate(product(table.defenses, table.metrics))
    )
    lines = [
        '<div class="scroll">',
        f'<table class="leaderboard" id="{anchor}">',
        f"<caption>Table {number}: {html.escape(caption(table))}</caption>",
        f'<thead><tr><th rowspan="2" scope="col">Attack</th>{groups}</tr><tr>{metrics}</tr></thead>',
        "<tbody>",
    ]
    for row in table.rows:
        cells = []
        for i, (d, m) in enumerate(product(table.defenses, table.metrics)):
            entry = table.entry(row, d, m)
            status = "" if math.isfinite(entry.mean) else entry.status  # no value: say why
            classes = " ".join(c for c in (status, "group-start" if i % width == 0 else "") if c)
            attributes = f' class="{classes}"' if classes else ""
            cells.append(f"<td{attributes}>{entry_text(table, row, d, m, style)}</td>")
        average = ' class="average"' if row == table.rows[-1] else ""
        lines.append(f'<tr{average}><th scope="row">{html.escape(row)}</th>{"".join(cells)}</tr>')
    for footer in footers(table):
        cells = "".join(
            f'<td colspan="{width}" class="group-start">{footer_text(footer, d, style)}</td>' for d in table.defenses
        )
        lines.append(f'<tr class="footer"><th scope="row">{html.escape(footer.label)}</th>{cells}</tr>')
    lines += ["</tbody>", "</table>", "</div>"]
    return "\n".join(lines)


def _start(index: int, width: int) -> str:
    return ' class="group-start"' if index % width == 0 else ""


def _plots(images: Sequence[Image]) -> str:
    if not images:
        return "<p>No plots.</p>"
    figures = []
    for image in images:
        data = base64.b64encode(image.png).decode("ascii")
        files = f" Files: {', '.join(image.files)}." if image.files else ""
        figures.append(
            "<figure>"
            f'<img src="data:image/png;base64,{data}" alt="{html.escape(image.title)}">'
            f"<figcaption>{html.escape(image.title + '.' + files)}</figcaption>"
            "</figure>"
        )
    return "\n".join(figures)


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


def _grid(df: pd.DataFrame, grid_text: str | None) -> str:
    rows = []
    for column, name in _GRID_AXES:
        if column in df.columns:
            values = pd.unique(df[column].dropna())
            if column in ("poison_ratio", "clean_fraction", "seed", "target_label"):
                values = sorted(values)
            shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
            rows.append(f"<tr><th>{html.escape(name)}</th><td>{html.escape(shown)}</td></tr>")
    parts = [f'<table class="plain" id="grid-axes"><caption>Axes of the reported rows</caption>{"".join(rows)}</table>']
    if grid_text is not None:
        parts.append(f'<h3>Grid file</h3>\n<pre id="grid-file">{html.escape(grid_text)}</pre>')
    else:
        parts.append("<p>Grid file: not given (the report was made from a results file).</p>")
    return "\n".join(parts)


def _provenance(about: dict) -> str:
    rows = [("result rows", str(about["rows"]))]
    if "status" in about:
        rows.append(("status", ", ".join(f"{s}: {n}" for s, n in about["status"].items())))
    for column, name in PROVENANCE_COLUMNS.items():
        if column in about:
            rows.append((name, ", ".join(about[column]) or "—"))
    if "finished_first" in about:
        rows.append(("finished", f"{about['finished_first']} to {about['finished_last']}"))
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="plain" id="provenance-table"><caption>Where these results came from</caption>{cells}</table>'
