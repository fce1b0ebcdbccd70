"""Plots: ASR and C-Acc after defense against the poison ratio and the clean fraction; C-Acc–ASR scatter.

Sensitivity figures: one per (metric, x axis, dataset, arch, value of the other axis):
one panel per attack, one line per defense, error bars (std over seeds) where a point
has several seeds, log x axis, y in percent.

Scatter figures: one per (dataset, arch): one panel per (poison ratio, clean fraction),
C-Acc on x and ASR on y (lower right is best), a colour per defense and a marker per
attack, error bars over seeds in both directions.

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas, never through
pyplot: nothing is shown, and no figure is registered globally that would need closing.
A defense keeps its colour (``C<position in defense order>``) in every figure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from bench.report.tables import aggregate, attack_order, defense_order

# x axis → (axis held fixed within a figure, its readable name)
AXES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "poison_ratio": ("clean_fraction", "poison ratio ρ"),
        "clean_fraction": ("poison_ratio", "clean-data fraction"),
    }
)
# plotted metric column → (file-name prefix, readable name)
PLOT_METRICS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {"asr_after": ("asr", "ASR"), "acc_after": ("acc", "C-Acc")}
)
IMAGE_FORMATS: tuple[str, ...] = ("png", "pdf")
PANEL_INCHES = (3.6, 2.8)  # width, height of one panel
MAX_COLUMNS = 4  # panels per figure row
DPI = 150
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")  # by attack position


@dataclass(frozen=True)
class Plot:
    """A figure and the file stem (no extension) and title it is saved and shown under."""

    stem: str
    title: str
    figure: Figure


def make_plots(df: pd.DataFrame) -> list[Plot]:
    """Every figure of ``df`` (result rows): sensitivity figures first, then scatters."""
    tidy = aggregate(df)
    attacks, defenses = attack_order(df), defense_order(df)
    return [*sensitivity_plots(tidy, attacks, defenses), *scatter_plots(tidy, attacks, defenses)]


def save(plot: Plot, out_dir: Path, image_formats: Sequence[str] = IMAGE_FORMATS) -> list[Path]:
    """Save ``plot`` into ``out_dir`` once per image format; return the paths.

    Names: ``<asr|acc>_vs_<axis>_<dataset>_<arch>_<other axis>-<value>.<ext>`` for a
    sensitivity figure (one whose x axis has fewer than two values with results is not
    made) and ``scatter_acc_asr_<dataset>_<arch>.<ext>``.

    The constrained layout is computed for the first format and kept for the others
    (it is a third of the drawing time).
    """
    paths = [out_dir / f"{plot.stem}.{ext}" for ext in image_formats]
    for path in paths:
        plot.figure.savefig(path, dpi=DPI)
        plot.figure.set_layout_engine("none")
    return paths


# --- sensitivity ---------------------------------------------------------------------


def sensitivity_plots(tidy: pd.DataFrame, attacks: Sequence[str], defenses: Sequence[str]) -> Iterator[Plot]:
    for axis, (fixed, _) in AXES.items():
        for (dataset, arch, value), part in tidy.groupby(["dataset", "arch", fixed], sort=True):
            for metric, (prefix, name) in PLOT_METRICS.items():
                points = part[part["metric"].eq(metric) & part["mean"].notna()]
                if points[axis].nunique() < 2:
                    continue
                title = f"{dataset} / {arch}, {AXES[fixed][1]} = {value:g}"
                yield Plot(
                    _slug(f"{prefix}_vs_{axis}_{dataset}_{arch}_{fixed}-{value:g}"),
                    f"{name} after defense vs {AXES[axis][1]}: {title}",
                    sensitivity_figure(points, axis, metric, attacks, defenses, title),
                )


def sensitivity_figure(
    points: pd.DataFrame,
    axis: str,
    metric: str,
    attacks: Sequence[str],
    defenses: Sequence[str],
    title: str,
) -> Figure:
    """Tidy rows of one metric (see ``aggregate``) → figure of ``metric`` (in %) against ``axis``.

    Panels follow ``attacks``, lines follow ``defenses`` (colour fixed by position there);
    labels absent from ``points`` are left out.
    """
    panels = [a for a in attacks if a in set(points["attack_label"])]
    figure, grid, ncols = _figure(len(panels))
    for ax, attack in zip(grid, panels):
        _panel(ax, points[points["attack_label"].eq(attack)], axis, defenses)
        ax.set_title(attack)
    _log_ticks(grid[0], sorted(points[axis].unique()))
    name = PLOT_METRICS[metric][1]
    figure.suptitle(f"{name} after defense vs {AXES[axis][1]}\n{title}")
    for index, ax in enumerate(grid[: len(panels)]):
        bottom = index + ncols >= len(panels)  # nothing drawn below it
        ax.tick_params(axis="x", labelbottom=bottom)
        ax.set_xlabel(f"{AXES[axis][1]} (log scale)" if bottom else "")
        ax.set_ylabel(f"{name} after defense (%)" if index % ncols == 0 else "")
    _legend(figure, _defense_handles(grid, defenses), "defense")
    return figure


def _figure(n_panels: int) -> tuple[Figure, Sequence, int]:
    """A constrained-layout figure with ``n_panels`` shared-axis panels (extra ones hidden)."""
    ncols = max(1, min(n_panels, MAX_COLUMNS))
    nrows = max(1, math.ceil(n_panels / ncols))
    figure = Figure(
        figsize=(PANEL_INCHES[0] * ncols + 1.6, PANEL_INCHES[1] * nrows + 1.0), layout="constrained"
    )
    FigureCanvasAgg(figure)
    grid = figure.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax in grid[n_panels:]:
        ax.set_visible(False)
    return figure, grid, ncols


def _panel(ax, points: pd.DataFrame, axis: str, defenses: Sequence[str]) -> None:
    """One line per defense: mean in %, error bar = std over seeds where n_seeds > 1."""
    for index, defense in enumerate(defenses):
        line = points[points["defense_label"].eq(defense)].sort_values(axis)
        if line.empty:
            continue
        spread = 100 * line["std"].where(line["n_seeds"] > 1)
        ax.errorbar(
            line[axis],
            100 * line["mean"],
            yerr=None if spread.isna().all() else spread,  # NaN: no bar
            color=f"C{index % 10}",
            marker="o",
            capsize=3,
            label=defense,
        )
    ax.grid(alpha=0.3)


def _log_ticks(ax, values: Sequence[float]) -> None:
    """Log x axis with a tick labelled at each value (shared axes follow)."""
    ax.set_xscale("log")
    ax.set_xticks(values)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _defense_handles(axes: Sequence, defenses: Sequence[str]) -> dict:
    """Label → artist of every defense drawn in ``axes``, in the order of ``defenses``."""
    handles = {}
    for ax in axes:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    return {d: handles[d] for d in defenses if d in handles}


def _legend(figure: Figure, handles: Mapping, title: str, loc: str = "outside lower center"):
    """One legend for the figure below the panels."""
    return figure.legend(
        list(handles.values()), list(handles), title=title, loc=loc, ncols=min(len(handles), 4) or 1
    )


# --- C-Acc–ASR scatter ---------------------------------------------------------------


def scatter_plots(tidy: pd.DataFrame, attacks: Sequence[str], defenses: Sequence[str]) -> Iterator[Plot]:
    for (dataset, arch), part in tidy.groupby(["dataset", "arch"], sort=True):
        points = _scatter_points(part)
        if points.empty:
            continue
        title = f"{dataset} / {arch}"
        yield Plot(
            _slug(f"scatter_acc_asr_{dataset}_{arch}"),
            f"C-Acc vs ASR after defense: {title}",
            scatter_figure(points, attacks, defenses, title),
        )


def _scatter_points(tidy: pd.DataFrame) -> pd.DataFrame:
    """Tidy rows → one row per cell with both C-Acc and ASR: ``acc``, ``acc_std``, ``asr``, ``asr_std`` (fractions), ``n_seeds``."""
    keys = ["poison_ratio", "clean_fraction", "attack_label", "defense_label"]
    wide = {}
    for metric, name in (("acc_after", "acc"), ("asr_after", "asr")):
        part = tidy[tidy["metric"].eq(metric)].set_index(keys)
        wide[name], wide[f"{name}_std"] = part["mean"], part["std"].where(part["n_seeds"] > 1)
        wide[f"{name}_n"] = part["n_seeds"]
    frame = pd.DataFrame(wide).dropna(subset=["acc", "asr"]).reset_index()
    frame["n_seeds"] = frame[["acc_n", "asr_n"]].min(axis=1)
    return frame.drop(columns=["acc_n", "asr_n"])


def scatter_figure(points: pd.DataFrame, attacks: Sequence[str], defenses: Sequence[str], title: str) -> Figure:
    """Points of ``_scatter_points`` → C-Acc (x, %) against ASR (y, %), one panel per (poison ratio, clean fraction)."""
    settings = list(points.groupby(["poison_ratio", "clean_fraction"], sort=True).groups)
    figure, grid, ncols = _figure(len(settings))
    for index, (ax, (rho, fraction)) in enumerate(zip(grid, settings)):
        part = points[points["poison_ratio"].eq(rho) & points["clean_fraction"].eq(fraction)]
        for p in part.itertuples(index=False):
            ax.errorbar(
                100 * p.acc,
                100 * p.asr,
                xerr=None if math.isnan(p.acc_std) else 100 * p.acc_std,
                yerr=None if math.isnan(p.asr_std) else 100 * p.asr_std,
                color=f"C{defenses.index(p.defense_label) % 10}",
                marker=MARKERS[attacks.index(p.attack_label) % len(MARKERS)],
                markersize=7,
                capsize=2,
                linestyle="none",
                alpha=0.85,
            )
        ax.set_title(f"ρ = {rho:g}, clean fraction {fraction:g}")
        ax.grid(alpha=0.3)
        ax.annotate("better", xy=(0.97, 0.05), xytext=(0.72, 0.25), xycoords="axes fraction",
                    textcoords="axes fraction", ha="center", va="center", color="0.35",
                    arrowprops={"arrowstyle": "->", "color": "0.35"})
        bottom = index + ncols >= len(settings)
        ax.tick_params(axis="x", labelbottom=bottom)
        ax.set_xlabel("C-Acc after defense (%)" if bottom else "")
        ax.set_ylabel("ASR after defense (%)" if index % ncols == 0 else "")
    figure.suptitle(f"C-Acc vs ASR after defense (lower right is best)\n{title}")
    drawn_defenses = [d for d in defenses if d in set(points["defense_label"])]
    drawn_attacks = [a for a in attacks if a in set(points["attack_label"])]
    by_defense = {
        d: Line2D([], [], color=f"C{defenses.index(d) % 10}", marker="o", linestyle="none") for d in drawn_defenses
    }
    by_attack = {
        a: Line2D([], [], color="0.3", marker=MARKERS[attacks.index(a) % len(MARKERS)], linestyle="none")
        for a in drawn_attacks
    }
    _legend(figure, by_defense, "defense (colour)", "outside lower left")
    _legend(figure, by_attack, "attack (marker)", "outside lower right")
    return figure


def _slug(text: str) -> str:
    """File-name-safe: runs of characters other than ``A-Za-z0-9_.-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")
