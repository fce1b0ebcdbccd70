"""Leaderboard tables: result rows reduced over seeds and laid out as in the papers, as one frame.

``aggregate`` turns rows (schema ``bench.rows``) into a tidy frame, one row per
(cell, metric) with mean, std and seed count over the ``ok`` rows. ``leaderboard`` pivots
it into the leaderboard frame:

- index (dataset, arch, poison_ratio, clean_fraction, attack): the tables sorted by their
  keys; in each, its attacks in order (first seen), then the ``Average`` row;
- columns (defense, metric, statistic): defenses in order (first seen, the baseline
  first); the selected metrics (C-Acc / ASR / RA / DER by default), then the rank metric
  when not among them, then ``defense_seconds`` with the cost option; ``STATISTICS``.

A defense without rows in a table has status NaN there. ``leaderboard_tables`` cuts the
frame into ``Table`` views, one per table, each with its own defenses, split by statistic. The renderers
(``bench.report.text``, ``bench.report.html``) add two per-defense footer rows to each
table: the average rank over attacks and, optionally, the mean wall time of the defense
stage; both are read off the ``Average`` row.

Average row: for a metric, the mean over attacks of the per-attack means, NaN unless every
attack has a value; for ``defense_seconds`` (cost), the mean over all the seeds behind the
defense's entries (weighted by n_seeds), in seconds.

Bold: the best shown value (percent, one decimal) per row and metric among the defenses
other than the baseline, when at least two of them have a value; ties are all bold.

Average rank: in every attack row, the defenses other than the baseline are ranked on
the ranking metric (DER by default; 1 = best, ties share the mean of their ranks),
compared at the precision the table shows (percent, one decimal), as the bolding is.
Only attack rows where every such defense has a value count, so all defenses are ranked
over the same attacks; the row label says so when that is fewer than all of them. The
baseline is not ranked. Defenses are the table's columns, so this per-defense summary
is a footer row (one value spanning each defense's column group), the transpose of the
rank column of a table with one row per defense.

Metrics stay fractions in [0, 1] everywhere except in the rendered tables, which show
percent with one decimal. Nothing here names a method except the baseline, ``none``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType

import numpy as np
import pandas as pd

BASELINE = "none"  # grid name of the no-defense baseline: first column group, never bold, not ranked
AVERAGE = "Average"  # label of the last attack-level row of every table
MISSING = "missing"  # status of a table entry that has no row at all
COST_COLUMN = "defense_seconds"  # result-row column of the cost footer

TABLE_KEYS: tuple[str, ...] = ("dataset", "arch", "poison_ratio", "clean_fraction")
ROW_KEYS: tuple[str, ...] = (*TABLE_KEYS, "attack")  # index of the leaderboard frame
CELL_KEYS: tuple[str, ...] = (*TABLE_KEYS, "attack_label", "defense_label")
TIDY_COLUMNS: tuple[str, ...] = (*CELL_KEYS, "metric", "mean", "std", "n_seeds", "status")
COLUMN_LEVELS: tuple[str, ...] = ("defense", "metric", "statistic")

# Statistics of a leaderboard entry, the last column level. Where a defense has no row in a
# table: mean, std and rank NaN, n_seeds 0, status NaN, the flags False.
STATISTICS: tuple[str, ...] = (
    "mean",  # over seeds; fractions in [0, 1] (seconds for defense_seconds); NaN without a value
    "std",  # over seeds, ddof=1; NaN with fewer than two seeds and in the Average row
    "n_seeds",  # ok rows with a value (Average: the fewest of its attacks'; cost: their sum)
    "status",  # ok, failed, diverged, or missing (no row)
    "bold",  # the best shown value of its row and metric
    "fewer_seeds",  # a value on fewer seeds than the table's best-covered shown entry
    "rank",  # rank metric: the rank in its attack row; Average row: the average rank
    "rank_bold",  # rank metric, Average row: the best shown average rank
)


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
# Metric column → factor turning "best" into "largest".
_ORIENTATION: Mapping[str, float] = MappingProxyType({c: 1.0 if b == "max" else -1.0 for c, b in BEST.items()})

# A cell's status from its rows' statuses: the first of these present.
_STATUS_PRIORITY: tuple[str, ...] = ("ok", "failed", "diverged", MISSING)


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

    @property
    def frame_columns(self) -> tuple[str, ...]:
        """Metric level of the leaderboard frame: the selected metrics, the rank metric, defense_seconds with cost."""
        return tuple(dict.fromkeys((*self.columns, self.rank_column, *([COST_COLUMN] if self.cost else []))))


# --- aggregation -------------------------------------------------------------------


def aggregate(df: pd.DataFrame, columns: Sequence[str] = tuple(HEADERS)) -> pd.DataFrame:
    """Rows → tidy frame with ``TIDY_COLUMNS``: one row per (cell, column of ``columns``).

    ``mean``/``std`` (ddof=1, NaN for one seed) are over the ok rows only, in the rows'
    units (fractions for metrics, seconds for ``defense_seconds``); ``n_seeds`` counts the
    ok rows with a value; ``status`` is the cell's status (the first of ok, failed,
    diverged present among its rows). Cells keep the order they are first seen in ``df``.
    """
    _validate(df, columns)
    keys = list(CELL_KEYS)
    cells = _cell_statuses(df, keys).reset_index()
    grid = cells.merge(pd.DataFrame({"metric": list(columns)}), how="cross")
    tidy = grid.merge(_seed_stats(df, keys, columns), how="left", left_on=[*keys, "metric"], right_index=True)
    return tidy.fillna({"n_seeds": 0}).astype({"n_seeds": int})[list(TIDY_COLUMNS)]


def _cell_statuses(df: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """Status per cell (index ``keys``, cells in the order first seen): the first of ok, failed,
    diverged among its rows; missing for none of them."""
    priorities = status_priority(df["status"]).groupby([df[k] for k in keys], sort=False).min()
    return first_status(priorities).fillna(MISSING).rename("status")


def _seed_stats(df: pd.DataFrame, keys: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """Per (cell, column of ``columns``) with a value in an ok row: ``mean``, ``std`` (ddof=1) and
    ``n_seeds`` of those values."""
    ok = df[df["status"].eq("ok")]
    values = ok.melt(id_vars=list(keys), value_vars=list(columns), var_name="metric", value_name="value")
    values = values.dropna(subset=["value"]).astype({"value": float})
    return values.groupby([*keys, "metric"], sort=False)["value"].agg(mean=_mean, std=_std, n_seeds="count")


# Per cell, numpy's mean and std (the bits of Series.mean/std), not the grouped kernels: their
# compensated sums can differ in the last place, which the CSV and JSON print.


def _mean(values: pd.Series) -> float:
    return values.to_numpy().mean()


def _std(values: pd.Series) -> float:
    """Standard deviation with ddof=1; NaN for one value."""
    return values.to_numpy().std(ddof=1) if len(values) > 1 else np.nan


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


def status_priority(statuses: pd.Series) -> pd.Series:
    """Position of each status in ok, failed, diverged, missing (NaN for any other); the least wins."""
    return statuses.map({s: i for i, s in enumerate(_STATUS_PRIORITY)})


def first_status(priorities: pd.Series) -> pd.Series:
    """The least ``status_priority`` of a group → its status; NaN when the group had none."""
    return priorities.map(dict(enumerate(_STATUS_PRIORITY)))


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


# --- the leaderboard frame -----------------------------------------------------------


def leaderboard(df: pd.DataFrame, options: ReportOptions | None = None) -> pd.DataFrame:
    """Rows → the leaderboard frame (see the module docstring); no rows, no tables: an empty frame."""
    options = options or ReportOptions()
    metrics = options.frame_columns
    attacks, defenses = attack_order(df), defense_order(df)
    tidy = aggregate(df, (*HEADERS, *([COST_COLUMN] if options.cost else [])))
    columns = pd.MultiIndex.from_product([defenses, metrics, list(STATISTICS)], names=list(COLUMN_LEVELS))
    if tidy.empty:
        return pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=list(ROW_KEYS)), columns=columns)
    entries = _in_frame_order(_table_entries(tidy[tidy["metric"].isin(metrics)], defenses), attacks, defenses, metrics)
    entries = pd.concat([entries.assign(average=False), _average_rows(entries).assign(average=True)])
    entries = _in_frame_order(entries, attacks, defenses, metrics).reset_index(drop=True)
    candidate = entries["status"].notna() & ~entries["defense"].isin(baseline_labels(df))
    entries["bold"] = _bold(entries, candidate)
    entries["fewer_seeds"] = _fewer_seeds(entries, options.columns)
    entries["rank"] = _ranks(entries, candidate, options.rank_column)
    entries["rank_bold"] = _rank_bold(entries)
    return _pivot(entries, columns)


def _table_entries(tidy: pd.DataFrame, defenses: Sequence[str]) -> pd.DataFrame:
    """Tidy rows → one row per (table, attack, defense, metric) of the table's attacks and all ``defenses``:
    ``ROW_KEYS``, defense, metric, mean, std, n_seeds, status. A hole in the table is ``missing`` with
    no seeds; a defense without rows in the table has status NaN there."""
    tidy = tidy.rename(columns={"attack_label": "attack", "defense_label": "defense"})
    tables = list(TABLE_KEYS)
    in_table = tidy[[*tables, "defense"]].drop_duplicates().assign(in_table=True)
    grid = (
        tidy[[*tables, "attack"]]
        .drop_duplicates()
        .merge(pd.DataFrame({"defense": list(defenses)}), how="cross")
        .merge(tidy[["metric"]].drop_duplicates(), how="cross")
        .merge(in_table, how="left", on=[*tables, "defense"])
    )
    entries = grid.merge(tidy, how="left", on=[*ROW_KEYS, "defense", "metric"])
    hole = entries["in_table"].notna() & entries["status"].isna()
    entries = entries.assign(status=entries["status"].mask(hole, MISSING), n_seeds=entries["n_seeds"].fillna(0))
    return entries.drop(columns="in_table").astype({"n_seeds": int})


def _in_frame_order(
    entries: pd.DataFrame, attacks: Sequence[str], defenses: Sequence[str], metrics: Sequence[str]
) -> pd.DataFrame:
    """Entries sorted as the frame shows them: by table keys, then attack (Average last), defense, metric in order."""
    positions = {
        "attack": {a: i for i, a in enumerate((*attacks, AVERAGE))},
        "defense": {d: i for i, d in enumerate(defenses)},
        "metric": {m: i for i, m in enumerate(metrics)},
    }
    return entries.sort_values(
        [*ROW_KEYS, "defense", "metric"],
        key=lambda column: column.map(positions[column.name]) if column.name in positions else column,
    )


def _average_rows(entries: pd.DataFrame) -> pd.DataFrame:
    """The ``AVERAGE`` row's entries of every (table, defense, metric) of ``entries`` (in frame order).

    A metric's: the mean over attacks of their means, NaN unless every attack has one, on
    the fewest seeds of theirs. ``defense_seconds``: the mean over all the seeds behind the
    attacks' means (weighted by n_seeds), on the sum of their seeds. Status ok with a value,
    else the attacks' (the first of ok, failed, diverged, missing among them).
    """
    n_seeds = entries["n_seeds"]
    parts = (
        entries.assign(
            finite=np.isfinite(entries["mean"]),
            weighted=(entries["mean"] * n_seeds).where(n_seeds > 0, 0.0),
            priority=status_priority(entries["status"]),
        )
        .groupby([*TABLE_KEYS, "defense", "metric"], sort=False)
        .agg(
            total=("mean", _sum_in_order), attacks=("mean", "size"), complete=("finite", "all"),
            fewest=("n_seeds", "min"), weighted=("weighted", _sum_in_order), seeds=("n_seeds", "sum"),
            priority=("priority", "min"),
        )
    )
    pooled = parts.index.get_level_values("metric") == COST_COLUMN
    valued = np.where(pooled, parts["seeds"] > 0, parts["complete"])
    mean = np.where(pooled, parts["weighted"] / parts["seeds"], parts["total"] / parts["attacks"])
    averages = pd.DataFrame(
        {
            "attack": AVERAGE,
            "mean": np.where(valued, mean, np.nan),
            "std": np.nan,
            "n_seeds": np.where(pooled, parts["seeds"], np.where(valued, parts["fewest"], 0)),
            "status": np.where(valued, "ok", first_status(parts["priority"])),
        },
        index=parts.index,
    )
    return averages.reset_index()


def _sum_in_order(values: pd.Series) -> float:
    """The values added one after another, as the rendered numbers always were (a grouped or
    numpy sum adds in another order, which can change the last bit that JSON prints)."""
    return sum(values, 0.0)


def shown_value(values: pd.Series, decimals: int) -> pd.Series:
    """``values`` as a table shows them: rounded to ``decimals`` as Python's ``round`` and ``format``
    do (numpy's rounding differs at some halves, e.g. 2.15); NaN where not finite."""
    finite = values.where(np.isfinite(values))
    return finite.map(lambda value: round(float(value), decimals))


def _largest(values: pd.Series, groups: Sequence[pd.Series]) -> pd.Series:
    """Whether each value is the largest of its group, among at least two values (NaN never is)."""
    grouped = values.groupby(list(groups))
    return values.eq(grouped.transform("max")) & grouped.transform("count").ge(2)


def _bold(entries: pd.DataFrame, candidate: pd.Series) -> pd.Series:
    """Whether each entry shows the best value of its row and metric among the candidate defenses."""
    oriented = shown_value(100 * entries["mean"], 1).where(candidate) * entries["metric"].map(_ORIENTATION)
    return _largest(oriented, [entries[k] for k in (*ROW_KEYS, "metric")])


def _fewer_seeds(entries: pd.DataFrame, shown: Sequence[str]) -> pd.Series:
    """Whether each entry of a shown metric has a value on fewer seeds than the table's best-covered entry
    (the most seeds behind an attack-row entry of a shown metric)."""
    n_seeds, of_shown = entries["n_seeds"], entries["metric"].isin(shown)
    most = n_seeds.where(of_shown & ~entries["average"]).groupby([entries[k] for k in TABLE_KEYS]).transform("max")
    return of_shown & np.isfinite(entries["mean"]) & n_seeds.gt(0) & n_seeds.lt(most)


def _ranks(entries: pd.DataFrame, candidate: pd.Series, metric: str) -> pd.Series:
    """On ``metric``: each candidate's rank in its attack row (1 = best shown value, ties share the mean)
    where every candidate of the row has a value, NaN elsewhere; in the Average row, the mean of those."""
    on_metric = candidate & entries["metric"].eq(metric)
    ranked = entries[on_metric & ~entries["average"]]
    rows = [ranked[k] for k in ROW_KEYS]
    counted = np.isfinite(ranked["mean"]).groupby(rows).transform("all")
    shown = shown_value(100 * ranked["mean"], 1).where(counted)
    per_attack = shown.groupby(rows).rank(method="average", ascending=BEST[metric] == "min").reindex(entries.index)
    average = per_attack.groupby([entries[k] for k in (*TABLE_KEYS, "defense", "metric")]).transform("mean")
    return per_attack.where(~entries["average"], average.where(on_metric))


def _rank_bold(entries: pd.DataFrame) -> pd.Series:
    """Whether an Average-row rank is the table's best shown one (two decimals), among at least two."""
    lowest_first = -shown_value(entries["rank"].where(entries["average"]), 2)
    return _largest(lowest_first, [entries[k] for k in TABLE_KEYS])


def _pivot(entries: pd.DataFrame, columns: pd.MultiIndex) -> pd.DataFrame:
    """Long entries (in frame order, every defense in every row) → the frame: ``ROW_KEYS`` × ``columns``."""
    rows = pd.MultiIndex.from_frame(entries[list(ROW_KEYS)].drop_duplicates())
    long = entries.astype({"status": object}).set_index([*ROW_KEYS, "defense", "metric"])[list(STATISTICS)]
    long = long.rename_axis(columns="statistic")
    wide = long.unstack(["defense", "metric"])
    return wide.reorder_levels(list(COLUMN_LEVELS), axis=1).reindex(index=rows, columns=columns)


# --- one table -----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Table:
    """One leaderboard table: its rows of the leaderboard frame, its own defenses only, by statistic.

    ``entries``: statistic (of ``STATISTICS``) → index the attack labels then ``AVERAGE``,
    columns (defense, metric) of every metric of the frame.
    """

    dataset: str
    arch: str
    poison_ratio: float
    clean_fraction: float
    entries: Mapping[str, pd.DataFrame]
    metrics: tuple[str, ...]  # metric columns shown in each group, in order
    rank_metric: str  # metric column the ranks are computed on
    baselines: frozenset[str]  # defense labels of the baseline: not bold, not ranked

    @property
    def rows(self) -> tuple[str, ...]:
        return tuple(self.entries["mean"].index)

    @property
    def attacks(self) -> tuple[str, ...]:
        return self.rows[:-1]

    @cached_property
    def defenses(self) -> tuple[str, ...]:
        """Column groups, the baseline first."""
        return tuple(self.entries["mean"].columns.unique("defense"))

    @property
    def candidates(self) -> tuple[str, ...]:
        """The defenses other than the baseline: bolded and ranked."""
        return tuple(d for d in self.defenses if d not in self.baselines)

    def statistic(self, name: str) -> pd.DataFrame:
        """``name`` of every shown entry: rows × (defense, metric), in table order."""
        return self.entries[name].loc[:, self._shown]

    @cached_property
    def _shown(self) -> np.ndarray:
        # the shown metrics lead each defense's metrics in the frame, in order
        return self.entries["mean"].columns.get_level_values("metric").isin(self.metrics)

    def summary(self, metric: str, name: str) -> pd.Series:
        """``name`` of ``metric`` in the Average row, per defense."""
        return self.entries[name].xs(metric, axis=1, level="metric").loc[AVERAGE]

    @cached_property
    def ranks(self) -> pd.Series:
        """Average rank per ranked defense; NaN when no attack counts."""
        return self.summary(self.rank_metric, "rank")[list(self.candidates)].astype(float)

    @property
    def rank_bold(self) -> frozenset[str]:
        """Defenses with the best shown average rank."""
        flags = self.summary(self.rank_metric, "rank_bold")
        return frozenset(flags.index[flags.astype(bool)])

    @cached_property
    def rank_attacks(self) -> tuple[str, ...]:
        """The attacks the ranks average over: those where every ranked defense has a value."""
        means = self.entries["mean"].xs(self.rank_metric, axis=1, level="metric")[list(self.candidates)].iloc[:-1]
        return tuple(means.index[np.isfinite(means.to_numpy(float)).all(axis=1)])

    @property
    def cost(self) -> pd.DataFrame | None:
        """Per defense: mean defense seconds over its ok rows (``mean``, ``std`` NaN, ``n_seeds``, ``status``);
        None when the cost option is off."""
        if COST_COLUMN not in self.entries["mean"].columns.unique("metric"):
            return None
        return pd.DataFrame({name: self.summary(COST_COLUMN, name) for name in ("mean", "std", "n_seeds", "status")})

    @property
    def max_seeds(self) -> int:
        """Most seeds behind any shown attack-row entry."""
        return int(self.statistic("n_seeds").iloc[:-1].to_numpy().max(initial=0))  # the attack rows

    @property
    def fewer_seeds(self) -> bool:
        """Whether some shown value rests on fewer seeds than the table's best-covered one."""
        return bool(self.statistic("fewer_seeds").to_numpy().any())


def leaderboard_tables(df: pd.DataFrame, options: ReportOptions | None = None) -> list[Table]:
    """Rows → one table per (dataset, arch, poison_ratio, clean_fraction), sorted by those keys."""
    options = options or ReportOptions()
    frame, baselines = leaderboard(df, options), baseline_labels(df)
    if frame.index.empty:
        return []
    entries = {name: frame.xs(name, axis=1, level="statistic").droplevel(list(TABLE_KEYS)) for name in STATISTICS}
    in_table = entries["status"].notna()
    tables = []
    positions = frame.groupby(level=list(TABLE_KEYS), sort=False).indices  # table keys → its rows
    for (dataset, arch, poison_ratio, clean_fraction), rows in positions.items():
        own = in_table.iloc[rows].any().to_numpy()  # the table's defenses, all their metrics
        tables.append(
            Table(
                dataset=str(dataset),
                arch=str(arch),
                poison_ratio=float(poison_ratio),
                clean_fraction=float(clean_fraction),
                entries=MappingProxyType({name: part.iloc[rows, own] for name, part in entries.items()}),
                metrics=options.columns,
                rank_metric=options.rank_column,
                baselines=baselines,
            )
        )
    return tables
