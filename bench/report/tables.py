"""Leaderboard tables: result rows reduced over seeds, laid out as in the papers, rendered.

``aggregate`` turns rows (schema ``bench.rows``) into a tidy frame, one row per
(cell, metric) with mean, std and seed count over the ``ok`` rows. ``leaderboard_tables``
lays it out: one table per (dataset, arch, poison ratio, clean fraction), attacks as
rows plus an Average row, defenses as column groups of C-Acc / ASR / RA / DER.
``to_markdown``, ``to_latex`` and ``to_csv`` render a frame of rows as text.

Metrics stay fractions in [0, 1] everywhere except in the rendered tables, which show
percent with one decimal. Nothing here names a method except the baseline, ``none``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from types import MappingProxyType

import pandas as pd

BASELINE = "none"  # grid name of the no-defense baseline: first column group, never bold
AVERAGE = "Average"  # label of the last row of every table
MISSING = "missing"  # status of a table entry that has no row at all

TABLE_KEYS: tuple[str, ...] = ("dataset", "arch", "poison_ratio", "clean_fraction")
CELL_KEYS: tuple[str, ...] = (*TABLE_KEYS, "attack_label", "defense_label")
TIDY_COLUMNS: tuple[str, ...] = (*CELL_KEYS, "metric", "mean", "std", "n_seeds", "status")

# Reported metric column → column header; the order is the column order in a group.
HEADERS: Mapping[str, str] = MappingProxyType(
    {"acc_after": "C-Acc", "asr_after": "ASR", "ra_after": "RA", "der": "DER"}
)
# Reported metric column → which value is best.
BEST: Mapping[str, str] = MappingProxyType(
    {"acc_after": "max", "asr_after": "min", "ra_after": "max", "der": "max"}
)
_PICK: Mapping[str, Callable[[Iterable[float]], float]] = MappingProxyType({"max": max, "min": min})

# A cell's status from its rows' statuses: the first of these present.
_STATUS_PRIORITY: tuple[str, ...] = ("ok", "failed", "diverged", MISSING)
# Statuses written out in a table entry that has no value; any other shows a dash.
_SHOWN_STATUSES = frozenset({"failed", "diverged"})

_MARKDOWN_ESCAPES: Mapping[str, str] = MappingProxyType({"|": r"\|", "*": r"\*"})
_LATEX_ESCAPES: Mapping[str, str] = MappingProxyType(
    {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
    }
)


@dataclass(frozen=True)
class Entry:
    """One (attack, defense, metric) value over seeds; mean and std are fractions in [0, 1], NaN when absent."""

    mean: float
    std: float  # over seeds, ddof=1; NaN with fewer than two seeds
    n_seeds: int  # ok rows with a value
    status: str  # ok, failed, diverged, or missing (no row)


NO_ENTRY = Entry(math.nan, math.nan, 0, MISSING)


@dataclass(frozen=True)
class LeaderboardTable:
    """One table: ``rows`` are attack labels then ``AVERAGE``; ``defenses`` are column groups, baseline first."""

    dataset: str
    arch: str
    poison_ratio: float
    clean_fraction: float
    rows: tuple[str, ...]
    defenses: tuple[str, ...]
    entries: Mapping[tuple[str, str, str], Entry]  # (row, defense, metric column) → entry
    bold: frozenset[tuple[str, str, str]]  # (row, defense, metric column) shown in bold

    def entry(self, row: str, defense: str, metric: str) -> Entry:
        return self.entries.get((row, defense, metric), NO_ENTRY)


# --- aggregation -------------------------------------------------------------------


def cell_status(statuses: Iterable[str]) -> str:
    """``ok`` if any row is ok, else ``failed``, else ``diverged``; ``missing`` when there is none."""
    present = set(statuses)
    return next((s for s in _STATUS_PRIORITY if s in present), MISSING)


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Rows → tidy frame with ``TIDY_COLUMNS``: one row per (cell, metric in ``HEADERS``).

    ``mean``/``std`` (ddof=1, NaN for one seed) are over the ok rows only, as fractions;
    ``n_seeds`` counts the ok rows with a value; ``status`` is ``cell_status`` of all rows.
    Cells keep the order they are first seen in ``df``.
    """
    _validate(df)
    records = []
    for key, cell in df.groupby(list(CELL_KEYS), sort=False):
        status = cell_status(cell["status"])
        ok = cell[cell["status"].eq("ok")]
        for metric in HEADERS:
            values = ok[metric].dropna().astype(float)
            records.append(
                (*key, metric, values.mean(), values.std(ddof=1), len(values), status)
            )
    return pd.DataFrame.from_records(records, columns=list(TIDY_COLUMNS))


def _validate(df: pd.DataFrame) -> None:
    """Raise ValueError when columns are missing or two rows claim the same cell and seed."""
    needed = [*CELL_KEYS, "defense", "seed", "status", *HEADERS]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"result frame lacks column(s): {', '.join(missing)}")
    duplicated = df.duplicated([*CELL_KEYS, "seed"], keep=False)
    if duplicated.any():
        first = df.loc[duplicated, [*CELL_KEYS, "seed"]].iloc[0].to_dict()
        raise ValueError(
            f"{int(duplicated.sum())} rows share a cell and seed, e.g. {first}; "
            "filter the frame to one grid and one target before reporting"
        )


def attack_order(df: pd.DataFrame) -> tuple[str, ...]:
    """Attack labels in the order first seen."""
    return tuple(pd.unique(df["attack_label"]))


def baseline_labels(df: pd.DataFrame) -> frozenset[str]:
    """Defense labels of the ``none`` baseline."""
    return frozenset(df.loc[df["defense"].eq(BASELINE), "defense_label"])


def defense_order(df: pd.DataFrame) -> tuple[str, ...]:
    """Defense labels in the order first seen, the baseline first."""
    baselines = baseline_labels(df)
    return tuple(sorted(pd.unique(df["defense_label"]), key=lambda label: label not in baselines))


# --- layout ------------------------------------------------------------------------


def leaderboard_tables(df: pd.DataFrame) -> list[LeaderboardTable]:
    """Rows → one table per (dataset, arch, poison_ratio, clean_fraction), sorted by those keys."""
    tidy = aggregate(df)
    attacks, defenses, baselines = attack_order(df), defense_order(df), baseline_labels(df)
    return [
        _table(key, part, attacks, defenses, baselines)
        for key, part in tidy.groupby(list(TABLE_KEYS), sort=True)
    ]


def _table(
    key: tuple,
    part: pd.DataFrame,
    attacks: Sequence[str],
    defenses: Sequence[str],
    baselines: frozenset[str],
) -> LeaderboardTable:
    entries = {
        (r.attack_label, r.defense_label, r.metric): Entry(float(r.mean), float(r.std), int(r.n_seeds), r.status)
        for r in part.itertuples(index=False)
    }
    rows = tuple(a for a in attacks if a in set(part["attack_label"]))
    columns = tuple(d for d in defenses if d in set(part["defense_label"]))
    for defense, metric in product(columns, HEADERS):
        column = [entries.get((a, defense, metric), NO_ENTRY) for a in rows]
        entries[(AVERAGE, defense, metric)] = average(column)
    rows = (*rows, AVERAGE)
    candidates = [d for d in columns if d not in baselines]
    dataset, arch, poison_ratio, clean_fraction = key
    return LeaderboardTable(
        dataset=str(dataset),
        arch=str(arch),
        poison_ratio=float(poison_ratio),
        clean_fraction=float(clean_fraction),
        rows=rows,
        defenses=columns,
        entries=MappingProxyType(entries),
        bold=_bold(entries, rows, candidates),
    )


def average(column: Sequence[Entry]) -> Entry:
    """Mean over attacks of the per-attack means (no std); NaN unless every attack has a value."""
    means = [e.mean for e in column]
    if means and all(math.isfinite(m) for m in means):
        return Entry(sum(means) / len(means), math.nan, min(e.n_seeds for e in column), "ok")
    return Entry(math.nan, math.nan, 0, cell_status(e.status for e in column))


def _bold(
    entries: Mapping[tuple[str, str, str], Entry], rows: Sequence[str], candidates: Sequence[str]
) -> frozenset[tuple[str, str, str]]:
    """The best shown value per (row, metric) among at least two candidate defenses; ties all bold."""
    bold = set()
    for row, metric in product(rows, HEADERS):
        shown = {
            d: round(100 * e.mean, 1)
            for d in candidates
            if math.isfinite((e := entries.get((row, d, metric), NO_ENTRY)).mean)
        }
        if len(shown) < 2:
            continue
        best = _PICK[BEST[metric]](shown.values())
        bold.update((row, d, metric) for d, value in shown.items() if value == best)
    return frozenset(bold)


# --- rendering ---------------------------------------------------------------------


def format_entry(entry: Entry, plus_minus: str, dash: str) -> str:
    """Percent with one decimal, ``mean{plus_minus}std`` when n_seeds > 1; a status word or dash if no value."""
    if not math.isfinite(entry.mean):
        return entry.status if entry.status in _SHOWN_STATUSES else dash
    text = f"{100 * entry.mean:.1f}"
    if entry.n_seeds > 1 and math.isfinite(entry.std):
        text += f"{plus_minus}{100 * entry.std:.1f}"
    return text


def caption(table: LeaderboardTable) -> str:
    """Plain-text title naming the table's dataset, arch, poison ratio and clean fraction."""
    return (
        f"{table.dataset}, {table.arch}, poison ratio {table.poison_ratio:g}, "
        f"clean fraction {table.clean_fraction:g}"
    )


def _escape(text: str, escapes: Mapping[str, str]) -> str:
    return "".join(escapes.get(char, char) for char in text)


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (``\\ & % $ # _ { } ~ ^``) for use in text mode."""
    return _escape(text, _LATEX_ESCAPES)


def _cells(table: LeaderboardTable, row: str, plus_minus: str, dash: str, strong: Callable[[str], str]) -> list[str]:
    """One table row's entries, defense-major then metric, bold ones wrapped by ``strong``."""
    cells = []
    for defense, metric in product(table.defenses, HEADERS):
        text = format_entry(table.entry(row, defense, metric), plus_minus, dash)
        cells.append(strong(text) if (row, defense, metric) in table.bold else text)
    return cells


_MARKDOWN_LEGEND = (
    "Values after defense, in %: mean ± std over seeds (mean only for one seed). "
    "Best per row among defenses other than the baseline in **bold**. "
    "—: no result; failed / diverged: every run of that cell did. "
    "Average: mean over attacks of the per-attack means."
)


def to_markdown(df: pd.DataFrame) -> str:
    """Rows → GitHub markdown: a legend, then one ``###`` heading and pipe table per leaderboard table."""
    tables = leaderboard_tables(df)
    if not tables:
        return "_No results._\n"
    return "\n\n".join([_MARKDOWN_LEGEND, *(_markdown_table(t) for t in tables)]) + "\n"


def _markdown_table(table: LeaderboardTable) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    header = ["Attack", *(f"{_escape(d, _MARKDOWN_ESCAPES)}: {HEADERS[m]}" for d, m in product(table.defenses, HEADERS))]
    align = [":---", *["---:"] * (len(header) - 1)]
    body = [
        [_escape(row, _MARKDOWN_ESCAPES), *_cells(table, row, " ± ", "—", lambda s: f"**{s}**")]
        for row in table.rows
    ]
    return "\n".join([f"### {caption(table)}", "", *(line(cells) for cells in [header, align, *body])])


def to_latex(df: pd.DataFrame) -> str:
    """Rows → a LaTeX fragment for ``\\input``: one booktabs ``table`` per leaderboard table."""
    tables = leaderboard_tables(df)
    if not tables:
        return "% no results\n"
    return "\n".join(_latex_table(t) for t in tables)


def _latex_table(table: LeaderboardTable) -> str:
    width = len(HEADERS)
    groups = " & ".join(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(d)}}}" for d in table.defenses)
    rules = " ".join(
        rf"\cmidrule(lr){{{2 + i * width}-{1 + (i + 1) * width}}}" for i in range(len(table.defenses))
    )
    metrics = " & ".join(latex_escape(HEADERS[m]) for _, m in product(table.defenses, HEADERS))
    body = [
        " & ".join([latex_escape(row), *_cells(table, row, r" $\pm$ ", "---", lambda s: rf"\textbf{{{s}}}")]) + r" \\"
        for row in table.rows
    ]
    label = re.sub(r"[^A-Za-z0-9.:-]+", "-", f"{table.dataset}-{table.arch}-rho{table.poison_ratio:g}-frac{table.clean_fraction:g}")
    return "\n".join(
        [
            r"\begin{table}[htbp]",
            r"\centering",
            r"\small",
            rf"\caption{{{_latex_caption(table)}}}",
            rf"\label{{tab:leaderboard:{label}}}",
            rf"\begin{{tabular}}{{l{'r' * width * len(table.defenses)}}}",
            r"\toprule",
            rf" & {groups} \\",
            rules,
            rf"Attack & {metrics} \\",
            r"\midrule",
            *body[:-1],
            r"\midrule",
            body[-1],
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
            "",
        ]
    )


def _latex_caption(table: LeaderboardTable) -> str:
    return (
        f"{latex_escape(table.dataset)}, {latex_escape(table.arch)}, "
        rf"poison ratio $\rho = {table.poison_ratio:g}$, clean fraction {table.clean_fraction:g}. "
        r"C-Acc, ASR, RA and DER after defense in \%, mean $\pm$ std over seeds; "
        "Average: mean over attacks; best per row among defenses other than the baseline in bold; "
        "---: no result."
    )


def to_csv(df: pd.DataFrame) -> str:
    """Rows → tidy CSV of ``aggregate`` (fractions, not percent; NaN as empty); no Average rows."""
    return aggregate(df).to_csv(index=False)
