"""Reports: the leaderboard frame, leaderboard values against hand-computed means and stds
(to the bit where JSON shows every bit), missing and failed cells, bolding, average ranks,
the cost row, metric selection, filters, LaTeX escaping and structure, the tidy CSV, the
JSON dump, provenance, and the figures.

The files written, the LaTeX compile and the HTML render are in test_report_render.py."""

from __future__ import annotations

import io
import json
import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from bench.report import (
    FORMATS,
    ReportOptions,
    leaderboard,
    leaderboard_tables,
    render,
    render_files,
    select_rows,
    write_report,
)
from bench.report.plots import _scatter_points, make_plots, scatter_figure, sensitivity_figure
from bench.report.provenance import provenance
from bench.report.tables import STATISTICS, aggregate

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
# defense_seconds: by defense, + 2 s for seed 1, + 1 s for blended; failed rows took 99 s
SECONDS = {"none": 0.5, "ft": 10.0, "ftsam": 20.0}
FAILED_SECONDS = 99.0


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
                    seconds = SECONDS[defense] + 2.0 * seed + (1.0 if attack == BLENDED else 0.0)
                    rows.append(
                        {
                            "grid": "paper",
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
                            "defense_seconds": FAILED_SECONDS if failed else seconds,
                            "device": "cuda:0" if seed == 0 else "cpu",
                            "torch_version": "2.5.1",
                            "bench_version": "0.1.0",
                            "git_commit": "0123abcd",
                            "grid_hash": "feedc0ffee",
                            "finished_at": f"2025-03-0{1 + seed}T12:{len(rows) % 60:02d}:00+00:00",
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


def small(der: dict[tuple[str, str], float], **columns) -> pd.DataFrame:
    """One seed, one setting; ``der`` maps (attack, defense) → DER, other metrics from ``columns`` or 0.5."""
    rows = []
    for (attack, defense), value in der.items():
        row = {
            "dataset": "d", "arch": "a", "attack": attack, "attack_label": attack, "poison_ratio": 0.1,
            "defense": defense, "defense_label": defense, "clean_fraction": 0.05, "seed": 0, "status": "ok",
            "acc_after": 0.5, "asr_after": 0.5, "ra_after": 0.5, "der": value,
        }
        for name, values in columns.items():
            row[name] = values[(attack, defense)]
        rows.append(row)
    return pd.DataFrame(rows)


# --- layout and values ----------------------------------------------------------------


def test_one_table_per_setting_with_attacks_and_average_as_rows():
    tables = leaderboard_tables(results())
    assert [(t.poison_ratio, t.clean_fraction) for t in tables] == [(0.01, 0.01), (0.01, 0.05), (0.1, 0.01), (0.1, 0.05)]
    assert all(t.rows == ("badnets", BLENDED, "Average") for t in tables)
    assert all(t.defenses == ("none", "ft", "ftsam(rho=2.0)") for t in tables)
    assert all(t.metrics == METRICS for t in tables)


def test_leaderboard_is_one_frame_with_an_average_row_per_table():
    options = ReportOptions(metrics=("der", "acc"), rank_by="asr", cost=True)
    frame = leaderboard(results(), options)
    assert list(frame.index.names) == ["dataset", "arch", "poison_ratio", "clean_fraction", "attack"]
    assert list(frame.columns.names) == ["defense", "metric", "statistic"]
    assert list(frame.columns.unique("defense")) == ["none", "ft", "ftsam(rho=2.0)"]
    # the shown metrics in order, then the rank metric, then the cost
    assert list(frame.columns.unique("metric")) == ["der", "acc_after", "asr_after", "defense_seconds"]
    assert list(frame.columns.unique("statistic")) == list(STATISTICS)
    table = frame.loc[("cifar10", "preactresnet18", 0.1, 0.05)]
    assert list(table.index) == ["badnets", BLENDED, "Average"]
    assert table.loc["badnets", ("ft", "acc_after", "bold")] and not table.loc["badnets", ("none", "acc_after", "bold")]
    assert table.loc[BLENDED, ("ftsam(rho=2.0)", "der", "status")] == "failed"
    assert math.isnan(table.loc["Average", ("ftsam(rho=2.0)", "der", "mean")])  # blended failed: no average
    assert table.loc["Average", ("ft", "der", "mean")] == pytest.approx((0.91 + 0.79) / 2)
    # ASR ranks on badnets only (blended/ftsam failed): ftsam 4.0 beats ft 11.0
    assert table.loc["badnets", ("ft", "asr_after", "rank")] == 2.0
    assert table.loc["Average", ("ftsam(rho=2.0)", "asr_after", "rank")] == 1.0
    assert table.loc["Average", ("ftsam(rho=2.0)", "asr_after", "rank_bold")]
    assert table.loc["Average", ("ft", "defense_seconds", "mean")] == pytest.approx(11.5)  # 10, 12, 11, 13
    assert table.loc["Average", ("ft", "defense_seconds", "n_seeds")] == 4


def test_a_defense_without_rows_in_a_table_is_left_out_of_it():
    extra = results().query("defense == 'ft' and clean_fraction == 0.05").assign(defense="anp", defense_label="anp")
    df = pd.concat([results(), extra], ignore_index=True)
    frame = leaderboard(df)
    assert frame.loc[("cifar10", "preactresnet18", 0.1, 0.01), ("anp", "der", "status")].isna().all()
    assert {t.clean_fraction: t.defenses[-1] for t in leaderboard_tables(df)} == {0.01: "ftsam(rho=2.0)", 0.05: "anp"}


def test_values_are_compared_as_shown_rounded_as_python_rounds():
    # 100 × 0.0215 shows 2.1 (Python rounds the binary value; numpy's round gives 2.2): a tie with 0.0205
    (table,) = leaderboard_tables(small({("a1", "none"): 0.5, ("a1", "d1"): 0.0215, ("a1", "d2"): 0.0205}))
    assert table.statistic("bold").loc["a1", [("d1", "der"), ("d2", "der")]].all()
    assert dict(table.ranks) == {"d1": 1.5, "d2": 1.5}


def test_average_adds_the_attack_means_in_order():
    der = {(a, d): v for a, value in (("a1", 0.1), ("a2", 0.2), ("a3", 0.3)) for d, v in (("none", 0.5), ("d1", value))}
    (table,) = json.loads(render(small(der), "json"))["tables"]
    average = next(e for e in table["entries"] if (e["attack"], e["defense"], e["metric"]) == ("Average", "d1", "der"))
    assert average["mean"] == (0.1 + 0.2 + 0.3) / 3  # to the bit; a compensated sum gives 0.19999999999999998


def test_seed_statistics_match_a_plain_series_to_the_bit():
    values = np.random.default_rng(13).random(7)  # grouped kernels differ here in the last place
    df = pd.concat([small({("a1", "d1"): v}).assign(seed=seed) for seed, v in enumerate(values)])
    (row,) = aggregate(df, ("der",)).itertuples()
    assert (row.mean, row.std, row.n_seeds) == (pd.Series(values).mean(), pd.Series(values).std(), 7)


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
    # seed 0 only, marked as resting on fewer seeds; ties ftsam's 92.0
    assert table_of(text, 0.1, 0.05)["badnets"]["ft: C-Acc"] == "**92.0†**"
    assert table_of(text, 0.1, 0.05)["badnets"]["ftsam(rho=2.0): C-Acc"] == "**92.0 ± 1.4**"
    assert table_of(text, 0.1, 0.05)["Average"]["ft: C-Acc"] == "91.5†"  # (92.0 + 91.0) / 2, one seed behind it
    assert table_of(text, 0.1, 0.01)["badnets"]["ft: RA"] == "diverged"
    assert "†" not in "".join(table_of(text, 0.01, 0.05)["badnets"].values())  # other tables unmarked


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


# --- ranks -------------------------------------------------------------------------------

RANKED = {  # DER; ranks per attack in the comments (1 = best)
    ("a1", "none"): 0.5, ("a1", "d1"): 0.90, ("a1", "d2"): 0.8004, ("a1", "d3"): 0.7996,  # 1, 2.5, 2.5 (both show 80.0)
    ("a2", "none"): 0.5, ("a2", "d1"): 0.50, ("a2", "d2"): 0.70, ("a2", "d3"): 0.60,  # 3, 1, 2
    ("a3", "none"): 0.5, ("a3", "d1"): 0.60, ("a3", "d2"): 0.60, ("a3", "d3"): 0.60,  # 2, 2, 2
}


def test_average_rank_over_attacks_with_shared_ranks_for_ties():
    (table,) = leaderboard_tables(small(RANKED))
    assert set(table.ranks.index) == {"d1", "d2", "d3"}  # the baseline is not ranked
    assert table.ranks["d1"] == pytest.approx((1 + 3 + 2) / 3)
    assert table.ranks["d2"] == pytest.approx((2.5 + 1 + 2) / 3)
    assert table.ranks["d3"] == pytest.approx((2.5 + 2 + 2) / 3)
    assert table.rank_attacks == ("a1", "a2", "a3") and table.rank_bold == {"d2"}
    rank_row = markdown_tables(render(small(RANKED), "markdown"))["d, a, poison ratio 0.1, clean fraction 0.05"]["Avg. rank (DER)"]
    assert [rank_row[f"{d}: C-Acc"] for d in ("none", "d1", "d2", "d3")] == ["", "2.00", "**1.83**", "2.17"]
    assert all(v == "" for k, v in rank_row.items() if not k.endswith("C-Acc"))  # one value per defense group


def test_rank_on_another_metric_lower_is_better_and_rank_bold_ties():
    asr = {("a1", "none"): 0.9, ("a1", "d1"): 0.10, ("a1", "d2"): 0.20, ("a2", "none"): 0.9, ("a2", "d1"): 0.30, ("a2", "d2"): 0.20}
    df = small({k: 0.5 for k in asr}, asr_after=asr)
    (table,) = leaderboard_tables(df, ReportOptions(rank_by="asr"))
    assert dict(table.ranks) == {"d1": 1.5, "d2": 1.5}  # 1 then 2, 2 then 1
    assert table.rank_bold == {"d1", "d2"}
    (by_der,) = leaderboard_tables(df)  # every DER 50.0: all tie
    assert dict(by_der.ranks) == {"d1": 1.5, "d2": 1.5}


def test_ranks_count_only_attacks_where_every_defense_has_a_result():
    tables = {(t.poison_ratio, t.clean_fraction): t for t in leaderboard_tables(results())}
    complete, holed = tables[(0.1, 0.01)], tables[(0.1, 0.05)]  # in the second, blended/ftsam failed
    assert complete.rank_attacks == ("badnets", BLENDED) and dict(complete.ranks) == {"ft": 2.0, "ftsam(rho=2.0)": 1.0}
    assert holed.rank_attacks == ("badnets",) and dict(holed.ranks) == {"ft": 2.0, "ftsam(rho=2.0)": 1.0}
    text = render(results(), "markdown")
    assert "Avg. rank (DER)" in table_of(text, 0.1, 0.01)
    assert table_of(text, 0.1, 0.05)["Avg. rank (DER, 1 of 2 attacks)"]["ftsam(rho=2.0): C-Acc"] == "**1.00**"
    # no attack where all have a result: no rank, shown as a dash
    df = results()
    df = df[~(df["attack_label"].eq("badnets") & df["defense"].eq("ft") & df["poison_ratio"].eq(0.1) & df["clean_fraction"].eq(0.05))]
    (table,) = [t for t in leaderboard_tables(df) if (t.poison_ratio, t.clean_fraction) == (0.1, 0.05)]
    assert table.rank_attacks == () and table.ranks.isna().all() and not table.rank_bold
    assert table_of(render(df, "markdown"), 0.1, 0.05)["Avg. rank (DER, 0 of 2 attacks)"]["ft: C-Acc"] == "—"


def test_only_the_baseline_means_no_rank_row():
    df = small({("a1", "none"): 0.5})
    (table,) = leaderboard_tables(df)
    assert table.ranks.empty
    assert not any(row.startswith("Avg. rank") for row in markdown_tables(render(df, "markdown"))["d, a, poison ratio 0.1, clean fraction 0.05"])


# --- cost, metric selection, filters -----------------------------------------------------


def test_cost_row_is_mean_defense_seconds_over_ok_rows():
    options = ReportOptions(cost=True)
    tables = {(t.poison_ratio, t.clean_fraction): t for t in leaderboard_tables(results(), options)}
    full = tables[(0.1, 0.01)].cost  # defense → mean, std, n_seeds, status
    assert full.loc["ft", "mean"] == pytest.approx((10 + 12 + 11 + 13) / 4) and full.loc["ft", "n_seeds"] == 4
    assert full.loc["none", "mean"] == pytest.approx((0.5 + 2.5 + 1.5 + 3.5) / 4)
    assert tables[(0.1, 0.05)].cost.loc["ftsam(rho=2.0)", "mean"] == pytest.approx((20 + 22) / 2)  # failed rows' 99 s left out
    assert tables[(0.01, 0.01)].cost.loc["ft", "mean"] == pytest.approx((10 + 12) / 2)  # blended/ft missing
    text = render(results(), "markdown", options)
    row = table_of(text, 0.1, 0.05)["Defense time (s)"]
    assert [row[f"{d}: C-Acc"] for d in DEFENSES.values()] == ["2.0", "11.5", "21.0"]
    assert "Defense time: mean wall seconds" in text.split("\n\n")[0]
    assert "Defense time (s)" not in render(results(), "markdown")  # off by default
    with pytest.raises(ValueError, match="defense_seconds"):
        render(results().drop(columns="defense_seconds"), "markdown", options)


def test_metric_selection_picks_and_orders_columns():
    options = ReportOptions(metrics=("der", "acc"))
    text = render(results(), "markdown", options)
    badnets = table_of(text, 0.1, 0.05)["badnets"]
    assert list(badnets) == [f"{d}: {m}" for d in DEFENSES.values() for m in ("DER", "C-Acc")]
    assert badnets["ftsam(rho=2.0): DER"] == "**96.0 ± 1.4**" and badnets["ft: C-Acc"] == "**93.0 ± 1.4**"
    latex = render(results(), "latex", options)
    assert r"\begin{tabular}{l" + "r" * 6 + "}" in latex and r"\multicolumn{2}{c}{ft}" in latex
    assert r"\cmidrule(lr){2-3} \cmidrule(lr){4-5} \cmidrule(lr){6-7}" in latex
    csv = pd.read_csv(io.StringIO(render(results(), "csv", options)))
    assert sorted(csv["metric"].unique()) == ["acc_after", "der"]
    # the rank metric need not be shown
    only_asr = ReportOptions(metrics=("asr",), rank_by="der")
    assert "Avg. rank (DER)" in table_of(render(results(), "markdown", only_asr), 0.1, 0.01)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metrics": ("acc", "ca")}, "unknown metric 'ca'; allowed: acc, asr, ra, der"),
        ({"metrics": ()}, "at least one metric"),
        ({"metrics": ("acc", "acc")}, "selected twice"),
        ({"rank_by": "auc"}, "unknown metric 'auc'"),
    ],
)
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReportOptions(**kwargs)


def test_filters_select_rows():
    df = pd.concat([results(), results().assign(dataset="gtsrb", arch="vgg")], ignore_index=True)
    assert len(select_rows(df)) == len(df)
    picked = select_rows(df, datasets=["gtsrb"], rhos=[0.1], fractions=[0.05, 0.01])
    assert set(picked["dataset"]) == {"gtsrb"} and set(picked["poison_ratio"]) == {0.1}
    assert set(picked["clean_fraction"]) == {0.05, 0.01}
    assert len(select_rows(df, rhos=[0.1 + 1e-12])) == (df["poison_ratio"] == 0.1).sum()  # float noise tolerated
    assert [(t.dataset, t.arch) for t in leaderboard_tables(select_rows(df, archs=["vgg"], rhos=[0.01]))] == [("gtsrb", "vgg")] * 2
    with pytest.raises(ValueError, match=r"no rows with poison_ratio 0.2; present: 0.01, 0.1"):
        select_rows(df, rhos=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"no rows with dataset mnist; present: cifar10, gtsrb"):
        select_rows(df, datasets=["mnist"])


# --- LaTeX, CSV, JSON -------------------------------------------------------------------


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
    assert "±" not in text and "—" not in text and "†" not in text
    body = "\n".join(line for line in text.splitlines() if not line.startswith("%"))  # the head comment may use %
    outside_math = re.sub(r"\$(\\pm|\\rho = [0-9.]+|\^\\dagger)\$", "", body)
    assert re.search(r"(?<!\\)[_%#$&]", outside_math.replace(" & ", " ")) is None
    caption = re.search(r"\\caption\{(.*)\}", tables[3]).group(1)
    assert caption.startswith(r"cifar10, preactresnet18, poison ratio $\rho = 0.1$, clean fraction 0.05.")
    assert r"mean $\pm$ std over seeds" in caption and "dagger" not in caption  # every entry has both seeds
    failed_row = next(line for line in tables[3].splitlines() if line.startswith("blended"))
    assert failed_row.count("failed") == 4
    rank_row = next(line for line in tables[3].splitlines() if line.startswith("Avg. rank"))
    assert rank_row == (r"Avg. rank (DER, 1 of 2 attacks) & \multicolumn{4}{c}{} & \multicolumn{4}{c}{2.00} & "
                        r"\multicolumn{4}{c}{\textbf{1.00}} \\")


def test_latex_standalone_is_a_document_with_the_same_tables():
    files = render_files(results(), "latex", ReportOptions(cost=True))
    assert list(files) == ["leaderboard.tex", "leaderboard_standalone.tex"]
    fragment, document = files.values()
    assert r"\documentclass" not in fragment and r"\begin{document}" not in fragment
    assert document.startswith(r"\documentclass") and r"\usepackage{booktabs}" in document
    assert document.rstrip().endswith(r"\end{document}")
    assert fragment.count(r"\begin{table}") == document.count(r"\begin{table}") == 4
    assert r"Defense time (s) & \multicolumn{4}{c}{2.0} & \multicolumn{4}{c}{11.5} & \multicolumn{4}{c}{21.0} \\" in fragment


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
    with_cost = pd.read_csv(io.StringIO(render(results(), "csv", ReportOptions(cost=True)))).set_index(key)
    assert with_cost.loc[(0.1, 0.05, BLENDED, "ft", "defense_seconds"), "mean"] == pytest.approx(12.0)  # 11, 13


def test_json_dumps_the_tables_as_fractions():
    document = json.loads(render(results(), "json", ReportOptions(cost=True)))
    assert document["format"] == "bench-leaderboard/1" and document["rank_by"] == "der"
    assert [m["name"] for m in document["metrics"]] == ["acc", "asr", "ra", "der"]
    assert len(document["tables"]) == 4
    table = next(t for t in document["tables"] if (t["poison_ratio"], t["clean_fraction"]) == (0.1, 0.05))
    assert table["attacks"] == ["badnets", BLENDED] and table["defenses"] == list(DEFENSES.values())
    entries = {(e["attack"], e["defense"], e["metric"]): e for e in table["entries"]}
    assert len(entries) == 3 * 3 * 4  # two attacks and the Average, three defenses, four metrics
    ft = entries[("badnets", "ft", "acc_after")]
    assert ft["mean"] == pytest.approx(0.93) and ft["std"] == pytest.approx(0.02 / math.sqrt(2))
    assert (ft["n_seeds"], ft["status"], ft["bold"]) == (2, "ok", True)
    failed = entries[(BLENDED, "ftsam(rho=2.0)", "der")]
    assert failed == {"attack": BLENDED, "defense": "ftsam(rho=2.0)", "metric": "der", "mean": None, "std": None,
                      "n_seeds": 0, "status": "failed", "bold": False}
    assert entries[("Average", "ft", "asr_after")]["mean"] == pytest.approx((0.11 + 0.41) / 2)
    assert entries[("Average", "ftsam(rho=2.0)", "asr_after")]["mean"] is None
    assert table["average_rank"] == {"ft": 2.0, "ftsam(rho=2.0)": 1.0} and table["rank_attacks"] == ["badnets"]
    assert table["cost_seconds"]["ft"]["mean"] == pytest.approx(11.5)
    assert document["provenance"]["status"] == {"failed": 2, "ok": 44}
    assert "cost_seconds" not in json.loads(render(results(), "json"))["tables"][0]


def test_provenance_is_read_off_the_rows():
    about = provenance(results())
    assert about["rows"] == 46 and about["status"] == {"failed": 2, "ok": 44}
    assert about["grid"] == ["paper"] and about["grid_hash"] == ["feedc0ffee"] and about["git_commit"] == ["0123abcd"]
    assert about["bench_version"] == ["0.1.0"] and about["torch_version"] == ["2.5.1"]
    assert about["device"] == ["cpu", "cuda:0"]
    assert about["finished_first"] == "2025-03-01T12:00:00+00:00" and about["finished_last"] == "2025-03-02T12:45:00+00:00"
    assert provenance(results()[["dataset", "status"]]) == {"rows": 46, "status": {"failed": 2, "ok": 44}}


# --- figures -----------------------------------------------------------------------------


def test_one_figure_per_axis_setting_and_metric_plus_a_scatter():
    # one seed of one point missing: its error bar is left out, the others stay
    df = results()
    df.loc[df["attack_label"].eq("badnets") & df["defense"].eq("ft") & df["seed"].eq(1), "status"] = "failed"
    stems = [p.stem for p in make_plots(df)]
    assert len(stems) == 2 * 2 * 2 + 1  # 2 axes × 2 values of the other axis × 2 metrics, + 1 scatter
    assert "asr_vs_poison_ratio_cifar10_preactresnet18_clean_fraction-0.05" in stems
    assert "acc_vs_clean_fraction_cifar10_preactresnet18_poison_ratio-0.01" in stems
    assert stems[-1] == "scatter_acc_asr_cifar10_preactresnet18"
    # an axis with a single value makes no sensitivity plot
    single = [p.stem for p in make_plots(results().query("clean_fraction == 0.05"))]
    assert sorted(single) == sorted(
        [f"{m}_vs_poison_ratio_cifar10_preactresnet18_clean_fraction-0.05" for m in ("acc", "asr")]
        + ["scatter_acc_asr_cifar10_preactresnet18"]
    )
    assert plt.get_fignums() == []  # nothing registered with pyplot


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


def test_scatter_has_a_panel_per_setting_acc_on_x_asr_on_y():
    tidy = aggregate(results())
    points = _scatter_points(tidy)
    assert len(points) == 2 * 3 * 2 * 2 - 2  # every cell but the failed and the missing one
    defenses = ("none", "ft", "ftsam(rho=2.0)")
    figure = scatter_figure(points, ("badnets", BLENDED), defenses, "t")
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == [
        "ρ = 0.01, clean fraction 0.01", "ρ = 0.01, clean fraction 0.05", "ρ = 0.1, clean fraction 0.01", "ρ = 0.1, clean fraction 0.05"
    ]
    assert len(axes[3].containers) == 5  # 6 cells less the failed one
    first = axes[3].containers[0]  # badnets/none at (0.1, 0.05): acc 0.95, 0.97; asr 0.97, 0.99
    x, y = first.lines[0].get_data()
    assert (list(x), list(y)) == (pytest.approx([96.0]), pytest.approx([98.0]))
    assert first.has_xerr and first.has_yerr
    assert axes[3].get_xlabel() == "C-Acc after defense (%)" and axes[0].get_ylabel() == "ASR after defense (%)"
    assert "lower right is best" in figure.get_suptitle()
    assert [[t.get_text() for t in legend.get_texts()] for legend in figure.legends] == [list(defenses), ["badnets", BLENDED]]


# --- input errors ----------------------------------------------------------------------


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="allowed: csv, html, json, latex, markdown"):
        write_report(results(), tmp_path / "out", "docx")
    assert not (tmp_path / "out").exists()
    assert sorted(FORMATS) == ["csv", "html", "json", "latex", "markdown"]
    with pytest.raises(ValueError, match="share a cell and seed"):
        write_report(pd.concat([results(), results().head(1)]), tmp_path / "out", "markdown")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="status"):
        render(results().drop(columns="status"), "latex")


def test_empty_frame_renders_without_tables(tmp_path):
    empty = results().head(0)
    assert render(empty, "markdown") == "_No results._\n"
    assert render(empty, "csv").startswith("dataset,arch,")
    assert json.loads(render(empty, "json"))["tables"] == []
    assert "<p>No results.</p>" in render(empty, "html")
    assert write_report(empty, tmp_path, "latex") == [tmp_path / "leaderboard.tex", tmp_path / "leaderboard_standalone.tex"]
