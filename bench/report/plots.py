"""Sensitivity plots: ASR and C-Acc after defense against the poison ratio and the clean fraction.

One figure per (metric, x axis, dataset, arch, value of the other axis): one panel per
attack, one line per defense, error bars (std over seeds) where a point has several
seeds, log x axis, y in percent. Figures are built on ``matplotlib.figure.Figure`` with
an Agg canvas, never through pyplot: nothing is shown, and no figure is registered
globally that would need closing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
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


def write_plots(
    df: pd.DataFrame, out_dir: Path, image_formats: Sequence[str] = IMAGE_FORMATS
) -> list[Path]:
    """Write every sensitivity figure of ``df`` (result rows) into ``out_dir``; return the paths.

    A figure whose x axis has fewer than two values with results is skipped (no file).
    Names: ``<asr|acc>_vs_<axis>_<dataset>_<arch>_<other axis>-<value>.<ext>``.
    """
    tidy = aggregate(df)
    attacks, defenses = attack_order(df), defense_order(df)
    written: list[Path] = []
    for axis, (fixed, _) in AXES.items():
        for (dataset, arch, value), part in tidy.groupby(["dataset", "arch", fixed], sort=True):
            for metric, (prefix, _) in PLOT_METRICS.items():
                points = part[part["metric"].eq(metric) & part["mean"].notna()]
                if points[axis].nunique() < 2:
                    continue
                title = f"{dataset} / {arch}, {AXES[fixed][1]} = {value:g}"
                figure = sensitivity_figure(points, axis, metric, attacks, defenses, title)
                stem = _slug(f"{prefix}_vs_{axis}_{dataset}_{arch}_{fixed}-{value:g}")
                written += _save(figure, Path(out_dir) / stem, image_formats)
    return written


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
    ncols = max(1, min(len(panels), MAX_COLUMNS))
    nrows = max(1, math.ceil(len(panels) / ncols))
    figure = Figure(
        figsize=(PANEL_INCHES[0] * ncols + 1.6, PANEL_INCHES[1] * nrows + 0.8), layout="constrained"
    )
    FigureCanvasAgg(figure)
    grid = figure.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, attack in zip(grid, panels):
        _panel(ax, points[points["attack_label"].eq(attack)], axis, defenses)
        ax.set_title(attack)
    for ax in grid[len(panels) :]:
        ax.set_visible(False)
    _log_ticks(grid[0], sorted(points[axis].unique()))
    name = PLOT_METRICS[metric][1]
    figure.suptitle(f"{name} after defense vs {AXES[axis][1]}\n{title}")
    for index, ax in enumerate(grid[: len(panels)]):
        bottom = index + ncols >= len(panels)  # nothing drawn below it
        ax.tick_params(axis="x", labelbottom=bottom)
        ax.set_xlabel(f"{AXES[axis][1]} (log scale)" if bottom else "")
        ax.set_ylabel(f"{name} after defense (%)" if index % ncols == 0 else "")
    _legend(figure, grid, defenses)
    return figure


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


def _legend(figure: Figure, axes: Sequence, defenses: Sequence[str]) -> None:
    """One legend for the figure, defenses in their order."""
    handles = {}
    for ax in axes:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    labels = [d for d in defenses if d in handles]
    figure.legend(
        [handles[d] for d in labels], labels, title="defense", loc="outside lower center", ncols=min(len(labels), 4) or 1
    )


def _save(figure: Figure, stem: Path, image_formats: Sequence[str]) -> list[Path]:
    paths = [stem.parent / f"{stem.name}.{ext}" for ext in image_formats]
    for path in paths:
        figure.savefig(path, dpi=DPI)
    return paths


def _slug(text: str) -> str:
    """File-name-safe: runs of characters other than ``A-Za-z0-9_.-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")
