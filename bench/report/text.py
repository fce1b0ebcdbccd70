"""Text formats of the leaderboard: markdown, LaTeX (fragment and standalone), CSV and JSON.

``to_markdown``, ``to_latex``, ``to_latex_standalone``, ``to_csv`` and ``to_json`` render
a frame of result rows (schema ``bench.rows``) as text. The leaderboards come from the
frame of ``bench.report.tables``: ``entry_texts`` writes a table's entries at once, the
footer rows (average rank, cost) are read off its Average row, and the tidy CSV is the
frame before pivoting (``aggregate``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd

from bench.report.provenance import provenance
from bench.report.tables import (
    BASELINE,
    COST_COLUMN,
    HEADERS,
    METRICS,
    ReportOptions,
    Table,
    aggregate,
    leaderboard_tables,
)

FEWER_SEEDS_MARK = "†"  # after a value that rests on fewer seeds than the table's best-covered entry
SHOWN_STATUSES = ("failed", "diverged")  # written out in an entry without a value; any other shows a dash

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


# --- shared by every format ------------------------------------------------------------


@dataclass(frozen=True)
class Symbols:
    """How one output format writes the non-ASCII bits of an entry."""

    plus_minus: str
    dash: str  # an entry with no value and no status word
    fewer_seeds: str  # mark after a value with fewer seeds than the table's best-covered entry


PLAIN = Symbols(" ± ", "—", FEWER_SEEDS_MARK)  # markdown and HTML
LATEX = Symbols(r" $\pm$ ", "---", r"$^\dagger$")


def percent(values: np.ndarray) -> np.ndarray:
    """Fractions → percent text with one decimal ("nan" where NaN), as Python objects."""
    return np.char.mod("%.1f", 100 * np.asarray(values, dtype=float)).astype(object)


def entry_texts(table: Table, symbols: Symbols) -> pd.DataFrame:
    """The table's entries as shown, rows × (defense, metric), without bold: percent with one decimal,
    ``mean{±}std`` when n_seeds > 1, then the fewer-seeds mark; a status word or dash if no value."""
    means = table.statistic("mean")
    mean, std = means.to_numpy(float), table.statistic("std").to_numpy(float)
    spread = (table.statistic("n_seeds").to_numpy() > 1) & np.isfinite(std)
    text = np.where(spread, percent(mean) + symbols.plus_minus + percent(std), percent(mean))
    text = np.where(table.statistic("fewer_seeds").to_numpy(bool), text + symbols.fewer_seeds, text)
    status = table.statistic("status").to_numpy(object)
    no_value = np.where(np.isin(status, SHOWN_STATUSES), status, symbols.dash)
    return pd.DataFrame(np.where(np.isfinite(mean), text, no_value), index=means.index, columns=means.columns)


def emphasised(texts: pd.DataFrame | pd.Series, bold: pd.DataFrame | pd.Series, strong: tuple[str, str]) -> list:
    """The values of ``texts`` (a list per row for a frame), the ``bold`` ones wrapped in ``strong`` (before, after)."""
    values = texts.to_numpy(object)
    return np.where(bold.to_numpy(bool), strong[0] + values + strong[1], values).tolist()


@dataclass(frozen=True, eq=False)
class Footer:
    """A per-defense summary row: ``values`` (NaN: no value) and ``bold`` over the defenses it covers."""

    label: str
    values: pd.Series
    spec: str  # format spec of a value
    bold: pd.Series


def footers(table: Table) -> list[Footer]:
    """The average-rank row (when any defense is ranked) and the cost row (when asked for)."""
    rows = []
    if table.candidates:
        header = HEADERS[table.rank_metric]
        label = f"Avg. rank ({header})"
        if len(table.rank_attacks) < len(table.attacks):
            label = f"Avg. rank ({header}, {len(table.rank_attacks)} of {len(table.attacks)} attacks)"
        bold = table.summary(table.rank_metric, "rank_bold")[list(table.candidates)]
        rows.append(Footer(label, table.ranks, ".2f", bold))
    cost = table.cost
    if cost is not None:
        means = cost["mean"].astype(float)
        rows.append(Footer("Defense time (s)", means, ".1f", pd.Series(False, index=means.index)))
    return rows


def footer_texts(footer: Footer, defenses: Sequence[str], dash: str) -> pd.Series:
    """A footer's value per defense, without bold: formatted, a dash when NaN, empty when not covered."""
    text = footer.values.map(f"{{:{footer.spec}}}".format).where(np.isfinite(footer.values), dash)
    return text.reindex(list(defenses), fill_value="")


def footer_bold(footer: Footer, defenses: Sequence[str]) -> pd.Series:
    """Whether a footer's value per defense is shown in bold."""
    return footer.bold.reindex(list(defenses), fill_value=False).astype(bool)


def footer_cells(footer: Footer, defenses: Sequence[str], dash: str, strong: tuple[str, str]) -> list[str]:
    """A footer's value per defense as shown, bold included."""
    return emphasised(footer_texts(footer, defenses, dash), footer_bold(footer, defenses), strong)


def caption(table: Table) -> str:
    """Plain-text title naming the table's dataset, arch, poison ratio and clean fraction."""
    return (
        f"{table.dataset}, {table.arch}, poison ratio {table.poison_ratio:g}, "
        f"clean fraction {table.clean_fraction:g}"
    )


def legend(options: ReportOptions, symbols: Symbols, bold: str) -> str:
    """The reading key shared by every table of a report, in plain text with the format's symbols."""
    parts = [
        f"Values after defense, in %: mean{symbols.plus_minus}std over seeds (mean only for one seed); "
        f"{symbols.fewer_seeds}: fewer seeds finished than for other entries of the table.",
        f"Best per row among defenses other than the baseline in {bold}.",
        f"{symbols.dash}: no result; failed / diverged: every run of that cell did.",
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


def _spread(texts: Sequence[str], width: int) -> list[str]:
    """One text per defense → one per column: each in its group's first column, the others empty."""
    return [cell for text in texts for cell in (text, *[""] * (width - 1))]


# --- markdown ----------------------------------------------------------------------

MARKDOWN_STRONG = ("**", "**")


def to_markdown(df: pd.DataFrame, options: ReportOptions | None = None) -> str:
    """Rows → GitHub markdown: a legend, then one ``###`` heading and pipe table per leaderboard table."""
    options = options or ReportOptions()
    tables = leaderboard_tables(df, options)
    if not tables:
        return "_No results._\n"
    key = legend(options, PLAIN, "**bold**")
    return "\n\n".join([key, *(_markdown_table(t) for t in tables)]) + "\n"


def _markdown_table(table: Table) -> str:
    texts = entry_texts(table, PLAIN)
    header = ["Attack", *(f"{markdown_escape(d)}: {HEADERS[m]}" for d, m in texts.columns)]
    align = [":---", *["---:"] * len(texts.columns)]
    rows = emphasised(texts, table.statistic("bold"), MARKDOWN_STRONG)
    body = [[markdown_escape(row), *cells] for row, cells in zip(table.rows, rows)]
    for footer in footers(table):
        cells = footer_cells(footer, table.defenses, PLAIN.dash, MARKDOWN_STRONG)
        body.append([markdown_escape(footer.label), *_spread(cells, len(table.metrics))])
    lines = ["| " + " | ".join(cells) + " |" for cells in [header, align, *body]]
    return "\n".join([f"### {caption(table)}", "", *lines])


# --- LaTeX -------------------------------------------------------------------------

LATEX_STRONG = (r"\textbf{", "}")
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
    return "\n".join([*head, *(_latex_table(t) for t in tables)])


def to_latex_standalone(df: pd.DataFrame, options: ReportOptions | None = None) -> str:
    """Rows → a complete LaTeX document (article, landscape; booktabs, graphicx) with every leaderboard
    table, each shrunk to the line width where wider; compiles with pdflatex."""
    options = options or ReportOptions()
    tables = leaderboard_tables(df, options)
    body: list[str] = []
    for index, table in enumerate(tables):
        if index and index % _TABLES_PER_PAGE == 0:
            body.append(r"\clearpage")
        body.append(_latex_table(table, fit=True))
    if not tables:
        body.append("No results.")
    return "\n".join([*LATEX_PREAMBLE, r"\begin{document}", *body, r"\end{document}", ""])


def _latex_table(table: Table, fit: bool = False) -> str:
    """One ``table`` float; ``fit`` shrinks a tabular wider than the line to its width (needs graphicx)."""
    label = re.sub(
        r"[^A-Za-z0-9.:-]+", "-", f"{table.dataset}-{table.arch}-rho{table.poison_ratio:g}-frac{table.clean_fraction:g}"
    )
    return "\n".join(
        [
            r"\begin{table}[htbp]",
            r"\centering",
            r"\small",
            rf"\caption{{{_latex_caption(table)}}}",
            rf"\label{{tab:leaderboard:{label}}}",
            *([r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"] if fit else []),
            *_latex_tabular(table),
            *(["}"] if fit else []),
            r"\end{table}",
            "",
        ]
    )


def _latex_tabular(table: Table) -> list[str]:
    """The booktabs tabular's lines: defense groups over metric headers, the attack rows, a rule,
    the Average row, then the footer rows, whose values span their defense's group.

    Written by hand: ``Styler.to_latex`` writes neither the per-group ``\\cmidrule``, nor the
    rule above the Average row, nor the spanning footer rows, nor a one-column group's
    ``\\multicolumn{1}``.
    """
    width, defenses = len(table.metrics), table.defenses

    def spanning(text: str) -> str:
        return rf"\multicolumn{{{width}}}{{c}}{{{text}}}"

    texts = entry_texts(table, LATEX)
    rows = [
        " & ".join([latex_escape(row), *cells]) + r" \\"
        for row, cells in zip(table.rows, emphasised(texts, table.statistic("bold"), LATEX_STRONG))
    ]
    footer_rows = [
        " & ".join([latex_escape(f.label), *map(spanning, footer_cells(f, defenses, LATEX.dash, LATEX_STRONG))])
        + r" \\"
        for f in footers(table)
    ]
    return [
        rf"\begin{{tabular}}{{l{'r' * width * len(defenses)}}}",
        r"\toprule",
        " & " + " & ".join(spanning(latex_escape(d)) for d in defenses) + r" \\",
        " ".join(rf"\cmidrule(lr){{{2 + i * width}-{1 + (i + 1) * width}}}" for i in range(len(defenses))),
        "Attack & " + " & ".join(latex_escape(HEADERS[m]) for _, m in texts.columns) + r" \\",
        r"\midrule",
        *rows[:-1],
        r"\midrule",
        rows[-1],
        *footer_rows,
        r"\bottomrule",
        r"\end{tabular}",
    ]


def _latex_caption(table: Table) -> str:
    """The table's setting, then a key to what it shows (only the parts that occur in it)."""
    shown = ", ".join(HEADERS[m] for m in table.metrics)
    parts = [
        f"{latex_escape(table.dataset)}, {latex_escape(table.arch)}, "
        rf"poison ratio $\rho = {table.poison_ratio:g}$, clean fraction {table.clean_fraction:g}. "
        + rf"{latex_escape(shown)} after defense in \%"
        + (r", mean $\pm$ std over seeds" if table.max_seeds > 1 else ""),
        *([r"$^\dagger$: fewer seeds finished"] if table.fewer_seeds else []),
        "best per row among defenses other than the baseline in bold",
        "Average: mean over attacks",
        f"Avg. rank: mean over attacks of the rank on {latex_escape(HEADERS[table.rank_metric])} (1 = best)",
        *(["defense time: mean wall seconds of the defense stage"] if table.cost is not None else []),
        "---: no result.",
    ]
    return "; ".join(parts)


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
        "metrics": [
            {"name": n, "column": METRICS[n].column, "header": METRICS[n].header, "best": METRICS[n].best}
            for n in options.metrics
        ],
        "rank_by": options.rank_column,
        "baseline": BASELINE,
        "tables": [_json_table(t) for t in leaderboard_tables(df, options)],
        "provenance": provenance(df),
    }
    return json.dumps(document, indent=1, allow_nan=False, ensure_ascii=False) + "\n"


def _json_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """Python scalars throughout, None for NaN and infinite numbers."""
    numbers = frame.select_dtypes("number")
    frame = frame.assign(**{c: numbers[c].where(np.isfinite(numbers[c])) for c in numbers})
    return frame.astype(object).where(frame.notna(), None)


def _json_entries(table: Table) -> list[dict]:
    """Every (row, defense, metric) entry as shown: the frame's statistics, row by row."""
    mean = table.statistic("mean")
    columns, n_rows = mean.columns, len(mean)
    entries = pd.DataFrame(
        {
            "attack": np.repeat(np.asarray(table.rows, dtype=object), len(columns)),
            "defense": np.tile(columns.get_level_values("defense").to_numpy(object), n_rows),
            "metric": np.tile(columns.get_level_values("metric").to_numpy(object), n_rows),
            "mean": mean.to_numpy(float).ravel(),
            **{name: table.statistic(name).to_numpy().ravel() for name in ("std", "n_seeds", "status", "bold")},
        }
    )
    return _json_ready(entries.astype({"std": float, "n_seeds": int, "bold": bool})).to_dict("records")


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _json_table(table: Table) -> dict:
    cost = table.cost
    return {
        "dataset": table.dataset,
        "arch": table.arch,
        "poison_ratio": table.poison_ratio,
        "clean_fraction": table.clean_fraction,
        "attacks": list(table.attacks),
        "defenses": list(table.defenses),
        "entries": _json_entries(table),
        "average_rank": {d: _number(r) for d, r in table.ranks.items()},
        "rank_attacks": list(table.rank_attacks),
        "rank_bold": sorted(table.rank_bold),
        **({"cost_seconds": _json_cost(cost)} if cost is not None else {}),
    }


def _json_cost(cost: pd.DataFrame) -> dict:
    """Defense → its cost entry (seconds): mean, std, n_seeds, status."""
    return _json_ready(cost.astype({"mean": float, "std": float, "n_seeds": int})).to_dict("index")
