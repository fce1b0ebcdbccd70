"""Leaderboard tables: result rows reduced over seeds, laid out as in the papers, rendered.

``aggregate`` turns rows (schema ``bench.rows``) into a tidy frame, one row per
(cell, metric) with mean, std and seed count over the ``ok`` rows. ``leaderboard_tables``
lays it out: one table per (dataset, arch, poison ratio, clean fraction), attacks as
rows plus an Average row, defenses as column groups of the selected metrics (C-Acc /
ASR / RA / DER by default), then per-defense footer rows: the average rank over attacks
and, optionally, the mean wall time of the defense stage. ``to_markdown``, ``to_latex``,
``to_latex_standalone``, ``to_csv`` and ``to_json`` render a frame of rows as text.

Average rank: in every attack row, the defenses other than the baseline are ranked on
the ranking metric (DER by default; 1 = best, ties share the mean of their ranks),
compared at the precision the table shows (percent, one decimal), as the bolding is.
Only attack rows where every such defense has a value count, so all defenses are ranked
over the same attacks; the row label says so when that is fewer than all of them. The
baseline is not ranked. Defenses are the table's columns, so this per-defense summary
is a footer row (one value spanning each defense's column group), the transpose of the
rank column of a table with one row per defense.

Cost: the mean of ``defense_seconds`` over the ok rows of a defense in the table (all
its attacks and seeds), in seconds.

Metrics stay fractions in [0, 1] everywhere except in the rendered tables, which show
percent with one decimal. Nothing here names a method except the baseline, ``none``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from types import MappingProxyType

import pandas as pd

from bench.report.provenance import provenance

BASELINE = "none"  # grid name of the no-defense baseline: first column group, never bold, not ranked
AVERAGE = "Average"  # label of the last attack-level row of every table
MISSING = "missing"  # status of a table entry that has no row at all
COST_COLUMN = "defense_seconds"  # result-row column of the cost footer
FEWER_SEEDS_MARK = "†"  # after a value that rests on fewer seeds than the table's best-covered entry

TABLE_KEYS: tuple[str, ...] = ("dataset", "arch", "poison_ratio", "clean_fraction")
CELL_KEYS: tuple[str, ...] = (*TABLE_KEYS, "attack_label", "defense_label")
TIDY_COLUMNS: tuple[str, ...] = (*CELL_KEYS, "metric", "mean", "std", "n_seeds", "status")


@dataclass(frozen=True)
class Metric:
    """A reported metric: its result-row column, its column header, and which value is best."""

    column: str
    header: str
    best: str  # "max" or "min"


# Short name (as on the command line) → metric; the order is the column order in a group.
METRICS: Mapping[str, Metric] = MappingProxyType(
    {
        "acc": Metric("acc_after", "C-Acc", "max"),
        "asr": Metric("asr_after", "ASR", "min"),
        "ra": Metric("ra_after", "RA", "max"),
        "der": Metric("der", "DER", "max"),
    }
)
# Metric column → header / which value is best.
HEADERS: Mapping[str, str] = MappingProxyType({m.column: m.header for m in METRICS.values()})
BEST: Mapping[str, str] = MappingProxyType({m.column: m.best for m in METRICS.values()})
_PICK: Mapping[str, Callable[[Iterable[float]], float]] = MappingProxyType({"max": max, "min": min})

# A cell's status from its rows' statuses: the first of these present.
_STATUS_PRIORITY: tuple[str, ...] = ("ok", "failed", "diverged", MISSING)
# Statuses written out in a table entry that has no value; any other shows a dash.
_SHOWN_STATUSES = frozenset({"failed", "diverged"})

_MARKDOWN_ESCAPES: Mapping[str, str] = MappingProxyType({"|": r"\|", "*": r"\*", "\\": "\\\\"})
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
        "<": r"\textless{}",
        ">": r"\textgreater{}",
        "|": r"\textbar{}",
    }
)


@dataclass(frozen=True)
class ReportOptions:
    """What the tables show: ``metrics`` (short names, keys of ``METRICS``, in column order),
    the metric ranks are computed on, and whether the cost footer row is added."""

    metrics: tuple[str, ...] = tuple(METRICS)
    rank_by: str = "der"
    cost: bool = False

    def __post_init__(self) -> None:
        metrics = tuple(self.metrics)
        object.__setattr__(self, "metrics", metrics)
        if not metrics:
            raise ValueError(f"select at least one metric; allowed: {', '.join(METRICS)}")
        for name in (*metrics, self.rank_by):
            if name not in METRICS:
                raise ValueError(f"unknown metric {name!r}; allowed: {', '.join(METRICS)}")
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"metric selected twice in {', '.join(metrics)}")

    @property
    def columns(self) -> tuple[str, ...]:
        """Result-row columns of the selected metrics, in column order."""
        return tuple(METRICS[m].column for m in self.metrics)

    @property
    def rank_column(self) -> str:
        return METRICS[self.rank_by].column


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
    metrics: tuple[str, ...]  # metric columns shown in each group, in order
    entries: Mapping[tuple[str, str, str], Entry]  # (row, defense, metric column) → entry
    bold: frozenset[tuple[str, str, str]]  # (row, defense, metric column) shown in bold
    rank_metric: str  # metric column the ranks are computed on
    ranks: Mapping[str, float]  # ranked defense (not the baseline) → average rank; NaN when no attack counts
    rank_attacks: tuple[str, ...]  # attacks the ranks average over
    rank_bold: frozenset[str]  # defenses with the best shown average rank
    cost: Mapping[str, Entry] | None = None  # defense → mean defense seconds over its ok rows; None: not asked
    max_seeds: int = 0  # most seeds behind any shown entry

    @property
    def attacks(self) -> tuple[str, ...]:
        return self.rows[:-1]

    def entry(self, row: str, defense: str, metric: str) -> Entry:
        return self.entries.get((row, defense, metric), NO_ENTRY)


# --- aggregation -------------------------------------------------------------------


def cell_status(statuses: Iterable[str]) -> str:
    """``ok`` if any row is ok, else ``failed``, else ``diverged``; ``missing`` when there is none."""
    present = set(statuses)
    return next((s for s in _STATUS_PRIORITY if s in present), MISSING)


def aggregate(df: pd.DataFrame, columns: Sequence[str] = tuple(HEADERS)) -> pd.DataFrame:
    """Rows → tidy frame with ``TIDY_COLUMNS``: one row per (cell, column of ``columns``).

    ``mean``/``std`` (ddof=1, NaN for one seed) are over the ok rows only, in the rows'
    units (fractions for metrics, seconds for ``defense_seconds``); ``n_seeds`` counts the
    ok rows with a value; ``status`` is ``cell_status`` of all rows. Cells keep the order
    they are first seen in ``df``.
    """
    _validate(df, columns)
    records = []
    for key, cell in df.groupby(list(CELL_KEYS), sort=False):
        status = cell_status(cell["status"])
        ok = cell[cell["status"].eq("ok")]
        for metric in columns:
            values = ok[metric].dropna().astype(float)
            records.append((*key, metric, values.mean(), values.std(ddof=1), len(values), status))
    return pd.DataFrame.from_records(records, columns=list(TIDY_COLUMNS))


def _validate(df: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise ValueError when columns are missing or two rows claim the same cell and seed."""
    needed = [*CELL_KEYS, "defense", "seed", "status", *columns]
    missing = [c for c in dict.fromkeys(needed) if c not in df.columns]
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


def leaderboard_tables(df: pd.DataFrame, options: ReportOptions | None = None) -> list[LeaderboardTable]:
    """Rows → one table per (dataset, arch, poison_ratio, clean_fraction), sorted by those keys."""
    options = options or ReportOptions()
    columns = (*HEADERS, *([COST_COLUMN] if options.cost else []))
    tidy = aggregate(df, columns)
    attacks, defenses, baselines = attack_order(df), defense_order(df), baseline_labels(df)
    return [
        _table(key, part, attacks, defenses, baselines, options)
        for key, part in tidy.groupby(list(TABLE_KEYS), sort=True)
    ]


def _table(
    key: tuple,
    part: pd.DataFrame,
    attacks: Sequence[str],
    defenses: Sequence[str],
    baselines: frozenset[str],
    options: ReportOptions,
) -> LeaderboardTable:
    entries = {
        (r.attack_label, r.defense_label, r.metric): Entry(float(r.mean), float(r.std), int(r.n_seeds), r.status)
        for r in part.itertuples(index=False)
    }
    rows = tuple(a for a in attacks if a in set(part["attack_label"]))
    columns = tuple(d for d in defenses if d in set(part["defense_label"]))
    candidates = [d for d in columns if d not in baselines]
    cost = None
    if options.cost:
        cost = MappingProxyType({d: pooled([entries.get((a, d, COST_COLUMN), NO_ENTRY) for a in rows]) for d in columns})
    for defense, metric in product(columns, HEADERS):
        entries[(AVERAGE, defense, metric)] = average([entries.get((a, defense, metric), NO_ENTRY) for a in rows])
    ranks, rank_attacks = average_ranks(entries, rows, candidates, options.rank_column)
    shown_ranks = {d: round(r, 2) for d, r in ranks.items() if math.isfinite(r)}
    rank_bold = (
        frozenset(d for d, r in shown_ranks.items() if r == min(shown_ranks.values()))
        if len(shown_ranks) >= 2
        else frozenset()
    )
    all_rows = (*rows, AVERAGE)
    seeds = [entries.get((r, d, m), NO_ENTRY).n_seeds for r, d, m in product(rows, columns, options.columns)]
    dataset, arch, poison_ratio, clean_fraction = key
    return LeaderboardTable(
        dataset=str(dataset),
        arch=str(arch),
        poison_ratio=float(poison_ratio),
        clean_fraction=float(clean_fraction),
        rows=all_rows,
        defenses=columns,
        metrics=options.columns,
        entries=MappingProxyType(entries),
        bold=_bold(entries, all_rows, candidates, options.columns),
        rank_metric=options.rank_column,
        ranks=MappingProxyType(ranks),
        rank_attacks=rank_attacks,
        rank_bold=rank_bold,
        cost=cost,
        max_seeds=max(seeds, default=0),
    )


def average(column: Sequence[Entry]) -> Entry:
    """Mean over attacks of the per-attack means (no std); NaN unless every attack has a value."""
    means = [e.mean for e in column]
    if means and all(math.isfinite(m) for m in means):
        return Entry(sum(means) / len(means), math.nan, min(e.n_seeds for e in column), "ok")
    return Entry(math.nan, math.nan, 0, cell_status(e.status for e in column))


def pooled(column: Sequence[Entry]) -> Entry:
    """Mean over all the seeds behind ``column`` (weighted by n_seeds; no std); NaN when there are none."""
    n = sum(e.n_seeds for e in column if e.n_seeds)
    if not n:
        return Entry(math.nan, math.nan, 0, cell_status(e.status for e in column))
    return Entry(sum(e.mean * e.n_seeds for e in column if e.n_seeds) / n, math.nan, n, "ok")


def shown_value(entry: Entry) -> float:
    """The value as a table shows it: percent rounded to one decimal (NaN stays NaN)."""
    return round(100 * entry.mean, 1) if math.isfinite(entry.mean) else math.nan


def average_ranks(
    entries: Mapping[tuple[str, str, str], Entry], attacks: Sequence[str], candidates: Sequence[str], metric: str
) -> tuple[dict[str, float], tuple[str, ...]]:
    """Average rank of each candidate defense on ``metric`` over the attacks where all candidates have a value.

    Per attack, rank 1 is the best shown value (``BEST[metric]``); ties share the mean of
    the ranks they span. Returns (defense → average rank, NaN when no attack counts;
    the attacks that count).
    """
    counted = tuple(
        a for a in attacks if all(math.isfinite(entries.get((a, d, metric), NO_ENTRY).mean) for d in candidates)
    )
    if not candidates or not counted:
        return {d: math.nan for d in candidates}, counted
    values = pd.DataFrame(
        [[shown_value(entries[(a, d, metric)]) for d in candidates] for a in counted], columns=list(candidates)
    )
    ranks = values.rank(axis=1, ascending=BEST[metric] == "min", method="average")
    return {d: float(ranks[d].mean()) for d in candidates}, counted


def _bold(
    entries: Mapping[tuple[str, str, str], Entry],
    rows: Sequence[str],
    candidates: Sequence[str],
    metrics: Sequence[str],
) -> frozenset[tuple[str, str, str]]:
    """The best shown value per (row, metric) among at least two candidate defenses; ties all bold."""
    bold = set()
    for row, metric in product(rows, metrics):
        shown = {
            d: value
            for d in candidates
            if math.isfinite(value := shown_value(entries.get((row, d, metric), NO_ENTRY)))
        }
        if len(shown) < 2:
            continue
        best = _PICK[BEST[metric]](shown.values())
        bold.update((row, d, metric) for d, value in shown.items() if value == best)
    return frozenset(bold)


# --- shared rendering helpers --------------------------------------------------------


@dataclass(frozen=True)
class Style:
    """How one output format writes the few non-ASCII or special bits of an entry."""

    plus_minus: str
    dash: str  # an entry with no value and no status word
    fewer_seeds: str  # mark after a value with fewer seeds than the table's best-covered entry
    strong: Callable[[str], str]  # bold
    escape: Callable[[str], str]


def format_entry(entry: Entry, plus_minus: str, dash: str) -> str:
    """Percent with one decimal, ``mean{plus_minus}std`` when n_seeds > 1; a status word or dash if no value."""
    if not math.isfinite(entry.mean):
        return entry.status if entry.status in _SHOWN_STATUSES else dash
    text = f"{100 * entry.mean:.1f}"
    if entry.n_seeds > 1 and math.isfinite(entry.std):
        text += f"{plus_minus}{100 * entry.std:.1f}"
    return text


def entry_text(table: LeaderboardTable, row: str, defense: str, metric: str, style: Style) -> str:
    """One table entry as shown: value (± std), fewer-seeds mark, bold; or a status word or dash."""
    entry = table.entry(row, defense, metric)
    text = format_entry(entry, style.plus_minus, style.dash)
    if math.isfinite(entry.mean) and 0 < entry.n_seeds < table.max_seeds:
        text += style.fewer_seeds
    return style.strong(text) if (row, defense, metric) in table.bold else text


@dataclass(frozen=True)
class Footer:
    """A per-defense summary row: ``values`` holds the defenses it covers (NaN: no value)."""

    label: str
    values: Mapping[str, float]
    spec: str  # format spec of a value
    bold: frozenset[str]


def footers(table: LeaderboardTable) -> list[Footer]:
    """The average-rank row (when any defense is ranked) and the cost row (when asked for)."""
    rows = []
    if table.ranks:
        label = f"Avg. rank ({HEADERS[table.rank_metric]})"
        if len(table.rank_attacks) < len(table.attacks):
            label = f"Avg. rank ({HEADERS[table.rank_metric]}, {len(table.rank_attacks)} of {len(table.attacks)} attacks)"
        rows.append(Footer(label, table.ranks, ".2f", table.rank_bold))
    if table.cost is not None:
        rows.append(Footer("Defense time (s)", {d: e.mean for d, e in table.cost.items()}, ".1f", frozenset()))
    return rows


def footer_text(footer: Footer, defense: str, style: Style) -> str:
    """A footer's value for ``defense``: formatted, dash when NaN, empty when the row does not cover it."""
    if defense not in footer.values:
        return ""
    value = footer.values[defense]
    if not math.isfinite(value):
        return style.dash
    text = format(value, footer.spec)
    return style.strong(text) if defense in footer.bold else text


def caption(table: LeaderboardTable) -> str:
    """Plain-text title naming the table's dataset, arch, poison ratio and clean fraction."""
    return (
        f"{table.dataset}, {table.arch}, poison ratio {table.poison_ratio:g}, "
        f"clean fraction {table.clean_fraction:g}"
    )


def legend(options: ReportOptions, plus_minus: str, dash: str, fewer_seeds: str, bold: str) -> str:
    """The reading key shared by every table of a report, in plain text with the format's symbols."""
    parts = [
        f"Values after defense, in %: mean{plus_minus}std over seeds (mean only for one seed); "
        f"{fewer_seeds}: fewer seeds finished than for other entries of the table.",
        f"Best per row among defenses other than the baseline in {bold}.",
        f"{dash}: no result; failed / diverged: every run of that cell did.",
        "Average: mean over attacks of the per-attack means.",
        f"Avg. rank: rank among the defenses other than the baseline on {METRICS[options.rank_by].header} per attack "
        "(1 = best, ties share the mean rank), averaged over the attacks where every one of them has a result.",
    ]
    if options.cost:
        parts.append("Defense time: mean wall seconds of the defense stage over the finished runs.")
    return " ".join(parts)


def _escape(text: str, escapes: Mapping[str, str]) -> str:
    return "".join(escapes.get(char, char) for char in text)


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (``\\ & % $ # _ { } ~ ^ < > |``) for use in text mode."""
    return _escape(text, _LATEX_ESCAPES)


def markdown_escape(text: str) -> str:
    return _escape(text, _MARKDOWN_ESCAPES)


# --- markdown ----------------------------------------------------------------------

MARKDOWN = Style(" ± ", "—", FEWER_SEEDS_MARK, lambda s: f"**{s}**", markdown_escape)


def to_markdown(df: pd.DataFrame, options: ReportOptions | None = None) -> str:
    """Rows → GitHub markdown: a legend, then one ``###`` heading and pipe table per leaderboard table."""
    options = options or ReportOptions()
    tables = leaderboard_tables(df, options)
    if not tables:
        return "_No results._\n"
    key = legend(options, " ± ", "—", FEWER_SEEDS_MARK, "**bold**")
    return "\n\n".join([key, *(_markdown_table(t) for t in tables)]) + "\n"


def _markdown_table(table: LeaderboardTable) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    style = MARKDOWN
    header = ["Attack", *(f"{style.escape(d)}: {HEADERS[m]}" for d, m in product(table.defenses, table.metrics))]
    align = [":---", *["---:"] * (len(header) - 1)]
    body = [
        [style.escape(row), *(entry_text(table, row, d, m, style) for d, m in product(table.defenses, table.metrics))]
        for row in table.rows
    ]
    for footer in footers(table):
        cells = []
        for defense in table.defenses:  # the value in the group's first column
            cells += [footer_text(footer, defense, style), *[""] * (len(table.metrics) - 1)]
        body.append([style.escape(footer.label), *cells])
    return "\n".join([f"### {caption(table)}", "", *(line(cells) for cells in [header, align, *body])])


# --- LaTeX -------------------------------------------------------------------------

LATEX = Style(r" $\pm$ ", "---", r"$^\dagger$", lambda s: rf"\textbf{{{s}}}", latex_escape)

LATEX_PREAMBLE = (
    r"\documentclass[10pt]{article}",
    r"\usepackage[landscape,margin=1.5cm]{geometry}",
    r"\usepackage{booktabs}",
    r"\usepackage{graphicx}",
)
_TABLES_PER_PAGE = 4  # the standalone document flushes floats after this many tables


def to_latex(df: pd.DataFrame, options: ReportOptions | None = None) -> str:
    """Rows → a LaTeX fragment for ``\\input``: one booktabs ``table`` float per leaderboard table.

    Needs ``\\usepackage{booktabs}`` in the including document, nothing else.
    """
    options = options or ReportOptions()
    tables = leaderboard_tables(df, options)
    head = [
        "% bench leaderboard: \\input this file; needs \\usepackage{booktabs}.",
        "% Wide tables: \\resizebox{\\linewidth}{!}{...} around the tabular (graphicx), or table*.",
        "% More than 18 floats in a row overflow LaTeX's float queue: filter (--rho, --fraction) or add \\clearpage.",
    ]
    if not tables:
        return "\n".join([*head, "% no results", ""])
    return "\n".join([*head, *(_latex_table(t, options) for t in tables)])


def to_latex_standalone(df: pd.DataFrame, options: ReportOptions | None = None) -> str:
    """Rows → a complete LaTeX document (article, landscape; booktabs, graphicx) with every leaderboard
    table, each shrunk to the line width where wider; compiles with pdflatex."""
    options = options or ReportOptions()
    tables = leaderboard_tables(df, options)
    body: list[str] = []
    for index, table in enumerate(tables):
        if index and index % _TABLES_PER_PAGE == 0:
            body.append(r"\clearpage")
        body.append(_latex_table(table, options, fit=True))
    if not tables:
        body.append("No results.")
    return "\n".join([*LATEX_PREAMBLE, r"\begin{document}", *body, r"\end{document}", ""])


def _latex_table(table: LeaderboardTable, options: ReportOptions, fit: bool = False) -> str:
    """One ``table`` float; ``fit`` shrinks a tabular wider than the line to its width (needs graphicx)."""
    style, width = LATEX, len(table.metrics)
    groups = " & ".join(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(d)}}}" for d in table.defenses)
    rules = " ".join(
        rf"\cmidrule(lr){{{2 + i * width}-{1 + (i + 1) * width}}}" for i in range(len(table.defenses))
    )
    metrics = " & ".join(latex_escape(HEADERS[m]) for _, m in product(table.defenses, table.metrics))
    body = [
        " & ".join([latex_escape(row), *(entry_text(table, row, d, m, style) for d, m in product(table.defenses, table.metrics))])
        + r" \\"
        for row in table.rows
    ]
    footer_lines = [
        " & ".join(
            [latex_escape(f.label), *(rf"\multicolumn{{{width}}}{{c}}{{{footer_text(f, d, style)}}}" for d in table.defenses)]
        )
        + r" \\"
        for f in footers(table)
    ]
    label = re.sub(
        r"[^A-Za-z0-9.:-]+", "-", f"{table.dataset}-{table.arch}-rho{table.poison_ratio:g}-frac{table.clean_fraction:g}"
    )
    return "\n".join(
        [
            r"\begin{table}[htbp]",
            r"\centering",
            r"\small",
            rf"\caption{{{_latex_caption(table, options)}}}",
            rf"\label{{tab:leaderboard:{label}}}",
            *([r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"] if fit else []),
            rf"\begin{{tabular}}{{l{'r' * width * len(table.defenses)}}}",
            r"\toprule",
            rf" & {groups} \\",
            rules,
            rf"Attack & {metrics} \\",
            r"\midrule",
            *body[:-1],
            r"\midrule",
            body[-1],
            *footer_lines,
            r"\bottomrule",
            r"\end{tabular}",
            *(["}"] if fit else []),
            r"\end{table}",
            "",
        ]
    )


def _latex_caption(table: LeaderboardTable, options: ReportOptions) -> str:
    """The table's setting, then a key to what it shows (only the parts that occur in it)."""
    shown = ", ".join(HEADERS[m] for m in table.metrics)
    parts = [
        f"{latex_escape(table.dataset)}, {latex_escape(table.arch)}, "
        rf"poison ratio $\rho = {table.poison_ratio:g}$, clean fraction {table.clean_fraction:g}. "
        + rf"{latex_escape(shown)} after defense in \%"
        + (r", mean $\pm$ std over seeds" if table.max_seeds > 1 else ""),
        *([r"$^\dagger$: fewer seeds finished"] if fewer_seeds(table) else []),
        "best per row among defenses other than the baseline in bold",
        "Average: mean over attacks",
        f"Avg. rank: mean over attacks of the rank on {latex_escape(HEADERS[table.rank_metric])} (1 = best)",
        *(["defense time: mean wall seconds of the defense stage"] if table.cost is not None else []),
        "---: no result.",
    ]
    return "; ".join(parts)


def fewer_seeds(table: LeaderboardTable) -> bool:
    """Whether some shown value rests on fewer seeds than the table's best-covered one."""
    return any(
        math.isfinite(e.mean) and 0 < e.n_seeds < table.max_seeds
        for (_, _, metric), e in table.entries.items()
        if metric in table.metrics
    )


# --- CSV and JSON ------------------------------------------------------------------


def to_csv(df: pd.DataFrame, options: ReportOptions | None = None) -> str:
    """Rows → tidy CSV of ``aggregate`` over the selected metrics (fractions, not percent; NaN as
    empty), plus ``defense_seconds`` (seconds) with the cost option; no Average or footer rows."""
    options = options or ReportOptions()
    return aggregate(df, (*options.columns, *([COST_COLUMN] if options.cost else []))).to_csv(index=False)


JSON_FORMAT = "bench-leaderboard/1"


def to_json(df: pd.DataFrame, options: ReportOptions | None = None) -> str:
    """Rows → JSON: every table as shown (entries as fractions with std, n_seeds, status and bold;
    the Average row; ranks; cost in seconds) plus the provenance of the rows. NaN is null."""
    options = options or ReportOptions()
    document = {
        "format": JSON_FORMAT,
        "units": "metrics: fractions in [0, 1]; cost: seconds",
        "metrics": [{"name": n, "column": METRICS[n].column, "header": METRICS[n].header, "best": METRICS[n].best} for n in options.metrics],
        "rank_by": options.rank_column,
        "baseline": BASELINE,
        "tables": [_json_table(t) for t in leaderboard_tables(df, options)],
        "provenance": provenance(df),
    }
    return json.dumps(document, indent=1, allow_nan=False, ensure_ascii=False) + "\n"


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _json_entry(entry: Entry) -> dict:
    return {"mean": _number(entry.mean), "std": _number(entry.std), "n_seeds": entry.n_seeds, "status": entry.status}


def _json_table(table: LeaderboardTable) -> dict:
    return {
        "dataset": table.dataset,
        "arch": table.arch,
        "poison_ratio": table.poison_ratio,
        "clean_fraction": table.clean_fraction,
        "attacks": list(table.attacks),
        "defenses": list(table.defenses),
        "entries": [
            {"attack": row, "defense": d, "metric": m, **_json_entry(table.entry(row, d, m)), "bold": (row, d, m) in table.bold}
            for row, d, m in product(table.rows, table.defenses, table.metrics)
        ],
        "average_rank": {d: _number(r) for d, r in table.ranks.items()},
        "rank_attacks": list(table.rank_attacks),
        "rank_bold": sorted(table.rank_bold),
        **({"cost_seconds": {d: _json_entry(e) for d, e in table.cost.items()}} if table.cost is not None else {}),
    }
