"""Reports: pure functions from result rows (schema ``bench.rows``) to tables, figures and pages.

``render(df, fmt, options)`` gives the leaderboard as text in one of ``FORMATS``;
``write_report(df, out_dir, fmt, options, grid_text=...)`` writes the format's files
(``FORMATS[fmt].files``) next to the plots (PNG and PDF). ``select_rows`` applies the
command line's filters; ``leaderboard(df, options)`` gives the leaderboard as one frame,
``leaderboard_tables(df, options)`` as one view of it per table.

Files per format: markdown ``leaderboard.md``; latex ``leaderboard.tex`` (fragment for
``\\input``) and ``leaderboard_standalone.tex``; csv ``leaderboard.csv`` (tidy);
json ``leaderboard.json``; html ``index.html`` (self-contained, plots embedded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from bench.report.html import Image, to_html
from bench.report.plots import DPI, IMAGE_FORMATS, Plot, make_plots, save
from bench.report.tables import METRICS, ReportOptions, Table, leaderboard, leaderboard_tables
from bench.report.text import to_csv, to_json, to_latex, to_latex_standalone, to_markdown

__all__ = [
    "FORMATS",
    "METRICS",
    "Format",
    "ReportOptions",
    "Table",
    "leaderboard",
    "leaderboard_tables",
    "render",
    "render_files",
    "select_rows",
    "write_report",
]

# (rows, options, grid file text or None, rendered figures) → text
Renderer = Callable[[pd.DataFrame, ReportOptions, "str | None", Sequence[Image]], str]


def _tables_only(function: Callable[[pd.DataFrame, ReportOptions], str]) -> Renderer:
    return lambda df, options, grid_text, images: function(df, options)


@dataclass(frozen=True)
class Format:
    """An output format: file name → renderer; the first file is the format's main file."""

    files: Mapping[str, Renderer]
    embeds_plots: bool = False  # its renderer takes the rendered figures


FORMATS: Mapping[str, Format] = MappingProxyType(
    {
        "markdown": Format(MappingProxyType({"leaderboard.md": _tables_only(to_markdown)})),
        "latex": Format(
            MappingProxyType(
                {
                    "leaderboard.tex": _tables_only(to_latex),
                    "leaderboard_standalone.tex": _tables_only(to_latex_standalone),
                }
            )
        ),
        "csv": Format(MappingProxyType({"leaderboard.csv": _tables_only(to_csv)})),
        "json": Format(MappingProxyType({"leaderboard.json": _tables_only(to_json)})),
        "html": Format(
            MappingProxyType(
                {"index.html": lambda df, options, grid_text, images: to_html(df, options, grid_text=grid_text, images=images)}
            ),
            embeds_plots=True,
        ),
    }
)


def _format(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; allowed: {', '.join(sorted(FORMATS))}")
    return FORMATS[fmt]


def render_files(
    df: pd.DataFrame,
    fmt: str,
    options: ReportOptions | None = None,
    *,
    grid_text: str | None = None,
    images: Sequence[Image] = (),
) -> dict[str, str]:
    """File name → text of every file of format ``fmt`` (a key of ``FORMATS``)."""
    spec, options = _format(fmt), options or ReportOptions()
    return {name: renderer(df, options, grid_text, images) for name, renderer in spec.files.items()}


def render(df: pd.DataFrame, fmt: str, options: ReportOptions | None = None, *, grid_text: str | None = None) -> str:
    """The main file of format ``fmt`` for ``df`` (result rows) as text; html without plots."""
    return next(iter(render_files(df, fmt, options, grid_text=grid_text).values()))


def write_report(
    df: pd.DataFrame,
    out_dir: Path,
    fmt: str,
    options: ReportOptions | None = None,
    *,
    grid_text: str | None = None,
    with_plots: bool = True,
    image_formats: Sequence[str] = IMAGE_FORMATS,
) -> list[Path]:
    """Write the format's files and the plots (``image_formats``) into ``out_dir``; return the paths.

    Creates ``out_dir``. The format's files come first in the returned list, then the
    plots. An unknown ``fmt`` or a frame the tables refuse raises ValueError before
    anything is written. For html the plots' PNG bytes are embedded in ``index.html``
    (``png`` is rendered even when not in ``image_formats``, in memory only).
    """
    spec, options = _format(fmt), options or ReportOptions()
    texts = render_files(df, fmt, options, grid_text=grid_text)  # validates before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_paths: list[Path] = []
    images: list[Image] = []
    for plot in make_plots(df) if with_plots else []:
        paths = save(plot, out_dir, image_formats)
        plot_paths += paths
        if spec.embeds_plots:
            png = next((p for p in paths if p.suffix == ".png"), None)
            images.append(Image(plot.title, png.read_bytes() if png else _png_bytes(plot), tuple(p.name for p in paths)))
    if spec.embeds_plots:
        texts = render_files(df, fmt, options, grid_text=grid_text, images=images)
    table_paths = []
    for name, text in texts.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        table_paths.append(path)
    return [*table_paths, *plot_paths]


def _png_bytes(plot: Plot) -> bytes:
    buffer = BytesIO()
    plot.figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


# --- filters ---------------------------------------------------------------------------

FILTER_COLUMNS: Mapping[str, str] = MappingProxyType(
    {"datasets": "dataset", "archs": "arch", "rhos": "poison_ratio", "fractions": "clean_fraction"}
)


def select_rows(
    df: pd.DataFrame,
    *,
    datasets: Iterable[str] = (),
    archs: Iterable[str] = (),
    rhos: Iterable[float] = (),
    fractions: Iterable[float] = (),
) -> pd.DataFrame:
    """The rows of ``df`` whose dataset, arch, poison ratio and clean fraction are among the given
    values (an empty filter keeps everything). Ratios match to a relative 1e-9.

    Raises ValueError naming the values present when a filter matches nothing.
    """
    keep = pd.Series(True, index=df.index)
    for name, wanted in (("datasets", datasets), ("archs", archs), ("rhos", rhos), ("fractions", fractions)):
        wanted = list(wanted)
        if not wanted:
            continue
        column = FILTER_COLUMNS[name]
        values = df[column]
        if name in ("rhos", "fractions"):
            match = np.isclose(values.to_numpy(float)[:, None], np.asarray(wanted, float)[None, :], rtol=1e-9, atol=0)
            hit = pd.Series(match.any(axis=1), index=df.index)
            unmatched = [w for w, found in zip(wanted, match.any(axis=0)) if not found]
        else:
            hit = values.isin(wanted)
            unmatched = [w for w in wanted if w not in set(values)]
        if unmatched:
            present = ", ".join(_show(v) for v in sorted(pd.unique(values)))
            raise ValueError(f"no rows with {column} {', '.join(_show(v) for v in unmatched)}; present: {present or 'none'}")
        keep &= hit
    return df[keep]


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)
