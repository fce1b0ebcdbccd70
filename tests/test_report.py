"""Reports: leaderboard values against hand-computed means and stds, missing and failed
cells, bolding, LaTeX escaping and structure, the tidy CSV, and the files write_report writes."""

from __future__ import annotations

import io
import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from bench.report import FORMATS, leaderboard_tables, render, write_report
from bench.report.plots import sensitivity_figure
from bench.report.tables import aggregate

BLENDED = "blended(alpha=0.1)"
DEFENSES = {"none": "none", "ft": "ft", "ftsam": "ftsam(rho=2.0)"}  # grid name → label
# Seed 0 at poison ratio 0.1, clean fraction 0.05: (acc_after, asr_after, ra_after, der).
BASE = {
    ("badnets", "none"): (0.95, 0.97, 0.03, 0.50),
    ("badnets", "ft"): (0.92, 0.10, 0.80, 0.90),
    ("badnets", "ftsam"): (0.91, 0.03, 0.88, 0.95),
    (BLENDED, "none"): (0.94, 0.96, 0.04, 0.50),
    (BLENDED, "ft"): (0.90, 0.40, 0.50, 0.78),
    (BLENDED, "ftsam"): (0.89, 0.05, 0.85, 0.93),
}
SEED_STEP = np.array([0.02, 0.02, -0.02, 0.02])  # seed 1 = seed 0 + step: std = 0.02/√2 → "1.4"
ASR_SHIFT = {0.1: 0.0, 0.01: -0.02}  # by poison ratio
ACC_SHIFT = {0.05: 0.0, 0.01: -0.01}  # by clean fraction
FAILED = (BLENDED, "ftsam", 0.1, 0.05)  # both seeds failed
MISSING = (BLENDED, "ft", 0.01, 0.01)  # no row at all
METRICS = ("acc_after", "asr_after", "ra_after", "der")


def results() -> pd.DataFrame:
    """2 attacks × 3 defenses × 2 ratios × 2 fractions × 2 seeds, one failed and one missing cell."""
    rows = []
    for (attack, defense), base in BASE.items():
        for rho in (0.1, 0.01):
            for fraction in (0.05, 0.01):
                if (attack, defense, rho, fraction) == MISSING:
                    continue
                failed = (attack, defense, rho, fraction) == FAILED
                for seed in (0, 1):
                    values = np.array(base) + seed * SEED_STEP
                    values[0] += ACC_SHIFT[fraction]
                    values[1] += ASR_SHIFT[rho]
                    rows.append(
                        {
                            "dataset": "cifar10",
                            "arch": "preactresnet18",
                            "attack": attack.split("(")[0],
                            "attack_label": attack,
                            "poison_ratio": rho,
                            "defense": defense,
                            "defense_label": DEFENSES[defense],
                            "clean_fraction": fraction,
                            "seed": seed,
                            "status": "failed" if failed else "ok",
                            # failed rows carry zeros: they must not be averaged in
                            **dict(zip(METRICS, np.zeros(4) if failed else values)),
                        }
                    )
    return pd.DataFrame(rows)


def markdown_tables(text: str) -> dict[str, dict[str, dict[str, str]]]:
    """Heading → row label → column header → cell text."""
    tables = {}
    for block in text.split("### ")[1:]:
        heading, *lines = block.strip().splitlines()
        table_lines = [line for line in lines if line.startswith("|")]
        split = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table_lines]
        header, _, *body = split
        tables[heading] = {cells[0]: dict(zip(header[1:], cells[1:])) for cells in body}
    return tables


def table_of(text: str, rho: float, fraction: float) -> dict[str, dict[str, str]]:
    return markdown_tables(text)[f"cifar10, preactresnet18, poison ratio {rho:g}, clean fraction {fraction:g}"]


def test_one_table_per_setting_with_attacks_and_average_as_rows():
    tables = leaderboard_tables(results())
    assert [(t.poison_ratio, t.clean_fraction) for t in tables] == [(0.01, 0.01), (0.01, 0.05), (0.1, 0.01), (0.1, 0.05)]
    assert all(t.rows == ("badnets", BLENDED, "Average") for t in tables)
    assert all(t.defenses == ("none", "ft", "ftsam(rho=2.0)") for t in tables)


def test_baseline_first_whatever_the_row_order():
    tables = leaderboard_tables(results().iloc[::-1])
    assert tables[0].defenses == ("none", "ftsam(rho=2.0)", "ft")
    assert tables[0].rows == (BLENDED, "badnets", "Average")


def test_markdown_values_are_mean_and_std_in_percent():
    table = table_of(render(results(), "markdown"), 0.1, 0.05)
    badnets = table["badnets"]
    assert badnets["ft: C-Acc"] == "**93.0 ± 1.4**"  # 0.92, 0.94
    assert badnets["ftsam(rho=2.0): C-Acc"] == "92.0 ± 1.4"
    assert badnets["ft: ASR"] == "11.0 ± 1.4"  # 0.10, 0.12
    assert badnets["ftsam(rho=2.0): ASR"] == "**4.0 ± 1.4**"
    assert badnets["ft: RA"] == "79.0 ± 1.4"  # 0.80, 0.78
    assert badnets["ftsam(rho=2.0): DER"] == "**96.0 ± 1.4**"  # 0.95, 0.97
    assert badnets["none: C-Acc"] == "96.0 ± 1.4"  # best C-Acc of the row, but the baseline is never bold
    # the shifts reach the right tables: acc by clean fraction, asr by poison ratio
    other = table_of(render(results(), "markdown"), 0.01, 0.01)["badnets"]
    assert other["ft: C-Acc"] == "**92.0 ± 1.4**"
    assert other["ft: ASR"] == "9.0 ± 1.4"


def test_failed_and_missing_cells_show_words_not_zeros():
    text = render(results(), "markdown")
    failed = table_of(text, 0.1, 0.05)[BLENDED]
    assert [failed[f"ftsam(rho=2.0): {m}"] for m in ("C-Acc", "ASR", "RA", "DER")] == ["failed"] * 4
    assert failed["ft: C-Acc"] == "91.0 ± 1.4"  # alone among the non-baselines: not bold
    missing = table_of(text, 0.01, 0.01)[BLENDED]
    assert [missing[f"ft: {m}"] for m in ("C-Acc", "ASR", "RA", "DER")] == ["—"] * 4
    # an average over attacks with a hole in it is no average
    assert table_of(text, 0.1, 0.05)["Average"]["ftsam(rho=2.0): C-Acc"] == "—"
    assert table_of(text, 0.01, 0.01)["Average"]["ft: ASR"] == "—"
    assert not any(v.startswith("0.0") for t in markdown_tables(text).values() for r in t.values() for v in r.values())


def test_diverged_cell_and_partly_failed_cell():
    df = results()
    cell = df["attack_label"].eq("badnets") & df["defense"].eq("ft") & df["poison_ratio"].eq(0.1)
    df.loc[cell & df["clean_fraction"].eq(0.05) & df["seed"].eq(1), "status"] = "failed"
    df.loc[cell & df["clean_fraction"].eq(0.01), "status"] = "diverged"
    text = render(df, "markdown")
    assert table_of(text, 0.1, 0.05)["badnets"]["ft: C-Acc"] == "**92.0**"  # seed 0 only; ties ftsam's 92.0
    assert table_of(text, 0.1, 0.05)["badnets"]["ftsam(rho=2.0): C-Acc"] == "**92.0 ± 1.4**"
    assert table_of(text, 0.1, 0.01)["badnets"]["ft: RA"] == "diverged"


def test_average_row_and_its_bolding():
    table = table_of(render(results(), "markdown"), 0.1, 0.01)
    average = table["Average"]
    assert average["ft: C-Acc"] == "**91.0**"  # (92.0 + 90.0) / 2
    assert average["ftsam(rho=2.0): C-Acc"] == "90.0"  # (91.0 + 89.0) / 2
    assert average["ft: ASR"] == "26.0"  # (11.0 + 41.0) / 2
    assert average["ftsam(rho=2.0): ASR"] == "**5.0**"  # (4.0 + 6.0) / 2


def test_one_seed_shows_mean_only():
    text = render(results().query("seed == 0"), "markdown")
    assert "±" not in text.split("\n\n", 1)[1]  # the legend mentions ±; no table entry does
    badnets = table_of(text, 0.1, 0.05)["badnets"]
    assert badnets["ft: C-Acc"] == "**92.0**"
    assert badnets["ftsam(rho=2.0): ASR"] == "**3.0**"


def test_latex_booktabs_escaping_and_bold():
    df = results()
    df["attack_label"] = df["attack_label"].replace("badnets", "bad_nets & #1 50%")
    df["defense_label"] = df["defense_label"].replace("ft", "ft_{lr}")
    text = render(df, "latex")
    tables = text.split(r"\begin{table}")[1:]
    assert len(tables) == 4
    for table in tables:
        assert table.index(r"\toprule") < table.index(r"\midrule") < table.index(r"\bottomrule") < table.index(r"\end{table}")
        assert r"\begin{tabular}{l" + "r" * 12 + "}" in table
        assert r"\multicolumn{4}{c}{none} & \multicolumn{4}{c}{ft\_\{lr\}} & \multicolumn{4}{c}{ftsam(rho=2.0)} \\" in table
        assert r"\cmidrule(lr){2-5} \cmidrule(lr){6-9} \cmidrule(lr){10-13}" in table
    assert r"bad\_nets \& \#1 50\% & " in text
    assert r"\textbf{93.0 $\pm$ 1.4}" in text
    assert "±" not in text and "—" not in text
    outside_math = re.sub(r"\$\\(pm|rho = [0-9.]+)\$", "", text)
    assert re.search(r"(?<!\\)[_%#$&]", outside_math.replace(" & ", " ")) is None
    caption = re.search(r"\\caption\{(.*)\}", tables[3]).group(1)
    assert caption.startswith(r"cifar10, preactresnet18, poison ratio $\rho = 0.1$, clean fraction 0.05.")
    failed_row = next(line for line in tables[3].splitlines() if line.startswith("blended"))
    assert failed_row.count("failed") == 4


def test_csv_is_tidy_fractions():
    csv = pd.read_csv(io.StringIO(render(results(), "csv")))
    assert list(csv.columns) == [
        "dataset", "arch", "poison_ratio", "clean_fraction", "attack_label", "defense_label",
        "metric", "mean", "std", "n_seeds", "status",
    ]
    assert len(csv) == (2 * 3 * 2 * 2 - 1) * 4  # every cell with rows, four metrics; no Average
    key = ["poison_ratio", "clean_fraction", "attack_label", "defense_label", "metric"]
    indexed = csv.set_index(key)
    ok = indexed.loc[(0.1, 0.05, "badnets", "ft", "acc_after")]
    assert ok["mean"] == pytest.approx(0.93)
    assert ok["std"] == pytest.approx(0.02 / math.sqrt(2))
    assert (ok["n_seeds"], ok["status"]) == (2, "ok")
    failed = indexed.loc[(0.1, 0.05, BLENDED, "ftsam(rho=2.0)", "asr_after")]
    assert math.isnan(failed["mean"]) and failed["n_seeds"] == 0 and failed["status"] == "failed"
    assert (0.01, 0.01, BLENDED, "ft", "der") not in indexed.index
    single = pd.read_csv(io.StringIO(render(results().query("seed == 0"), "csv")))
    assert single["std"].isna().all() and (single.loc[single["status"].eq("ok"), "n_seeds"] == 1).all()


def test_write_report_writes_leaderboard_and_plots(tmp_path):
    df = results()
    # one seed of one point missing: its error bar is left out, the others stay
    df.loc[df["attack_label"].eq("badnets") & df["defense"].eq("ft") & df["seed"].eq(1), "status"] = "failed"
    out = tmp_path / "report" / "nested"
    paths = write_report(df, out, "markdown")
    assert paths[0] == out / "leaderboard.md" and paths[0].read_text().startswith("Values after defense")
    names = {p.name for p in paths}
    assert len(paths) == 1 + 2 * 2 * 2 * 2  # 2 axes × 2 values of the other axis × 2 metrics × (png, pdf)
    assert "asr_vs_poison_ratio_cifar10_preactresnet18_clean_fraction-0.05.png" in names
    assert "acc_vs_clean_fraction_cifar10_preactresnet18_poison_ratio-0.01.pdf" in names
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    for path in paths[1:]:
        assert path.stat().st_size > 1000
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == []


def test_single_valued_axis_makes_no_plot(tmp_path):
    paths = write_report(results().query("clean_fraction == 0.05"), tmp_path, "csv")
    assert paths[0].name == "leaderboard.csv"
    assert sorted(p.name for p in paths[1:]) == sorted(
        f"{m}_vs_poison_ratio_cifar10_preactresnet18_clean_fraction-0.05.{ext}" for m in ("acc", "asr") for ext in ("pdf", "png")
    )


def test_figure_has_a_panel_per_attack_and_error_bars_over_seeds():
    tidy = aggregate(results())
    points = tidy[tidy["metric"].eq("asr_after") & tidy["clean_fraction"].eq(0.05) & tidy["mean"].notna()]
    defenses = ("none", "ft", "ftsam(rho=2.0)")
    figure = sensitivity_figure(points, "poison_ratio", "asr_after", ("badnets", BLENDED), defenses, "t")
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["badnets", BLENDED]
    assert all(ax.get_xscale() == "log" for ax in axes)
    assert len(axes[0].containers) == 3 and len(axes[1].containers) == 3
    assert list(axes[1].containers[2].lines[0].get_xdata()) == [0.01]  # blended/ftsam failed at 0.1: one point left
    assert all(c.has_yerr for ax in axes for c in ax.containers)
    x, y = axes[0].containers[1].lines[0].get_data()  # badnets, ft
    assert list(x) == [0.01, 0.1] and list(y) == pytest.approx([9.0, 11.0])
    assert [t.get_text() for t in figure.legends[0].get_texts()] == list(defenses)
    one_seed = aggregate(results().query("seed == 0"))
    points = one_seed[one_seed["metric"].eq("asr_after") & one_seed["clean_fraction"].eq(0.05) & one_seed["mean"].notna()]
    figure = sensitivity_figure(points, "poison_ratio", "asr_after", ("badnets", BLENDED), defenses, "t")
    assert not any(c.has_yerr for ax in figure.axes for c in ax.containers)


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="allowed: csv, latex, markdown"):
        write_report(results(), tmp_path / "out", "html")
    assert not (tmp_path / "out").exists()
    assert sorted(FORMATS) == ["csv", "latex", "markdown"]
    with pytest.raises(ValueError, match="share a cell and seed"):
        render(pd.concat([results(), results().head(1)]), "markdown")
    with pytest.raises(ValueError, match="status"):
        render(results().drop(columns="status"), "latex")


def test_empty_frame_renders_without_tables(tmp_path):
    empty = results().head(0)
    assert render(empty, "markdown") == "_No results._\n"
    assert render(empty, "csv").startswith("dataset,arch,")
    assert write_report(empty, tmp_path, "latex") == [tmp_path / "leaderboard.tex"]
