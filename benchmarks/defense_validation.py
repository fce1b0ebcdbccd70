"""The defense zoo's validation sweep: run a grid with ``bench run``, print its report and the bar.

    python benchmarks/defense_validation.py --results-dir /tmp/validation

Runs ``grids/digits_defenses.yaml`` (or ``--grid``) through the ``bench`` command line,
prints the Markdown leaderboard of ``bench report`` (with the defense-cost row), then
one verdict line per defense and attack against the bar:

- at the largest clean fraction, every defense other than ``none`` and ``ft`` brings
  the mean ASR over seeds below 20% with a mean clean-accuracy drop under 5 points;
- at the smallest clean fraction, FT-SAM's mean ASR is below vanilla FT's.

A cell that diverged counts against its defense's verdict. The verdicts are printed, not
enforced: the exit status is non-zero only when the sweep itself fails (``bench run``, which
exits 1 when a cell ended ``failed``, or ``bench report``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.cells import expand
from bench.grid import load_grid
from bench.store import ResultStore

ASR_BAR = 0.20  # mean ASR after the defense must be below this (fraction of triggered test images)
DROP_BAR = 0.05  # mean clean-accuracy drop must be below this
NOT_JUDGED = ("none", "ft")  # the baselines the bar compares against


@dataclass(frozen=True)
class Verdict:
    """One defense × attack at one clean fraction: means over the seeds that finished ok, in [0, 1]."""

    defense: str
    attack: str
    fraction: float
    acc_drop: float
    asr: float
    diverged: int  # seeds whose cell ended "diverged"
    passed: bool

    def line(self) -> str:
        mark = "pass" if self.passed else "FAIL"
        note = f" ({self.diverged} diverged)" if self.diverged else ""
        return f"{self.defense:12} {self.attack:10} {self.fraction:5.2f} {100 * self.acc_drop:8.1f} {100 * self.asr:7.1f}  {mark}{note}"


def seed_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (defense label, attack label, clean fraction), in the rows' order: mean ``acc_before``,
    ``acc_after`` and ``asr_after`` of the rows that ended ok, and ``diverged``, the count that diverged."""
    keys = ["defense_label", "attack_label", "clean_fraction"]
    ok = rows[rows["status"] == "ok"].groupby(keys, sort=False)[["acc_before", "acc_after", "asr_after"]].mean()
    diverged = (rows["status"] == "diverged").groupby([rows[k] for k in keys], sort=False).sum().rename("diverged")
    in_order = pd.MultiIndex.from_frame(rows[keys].drop_duplicates())  # the grid's order, not sorted
    return ok.join(diverged, how="outer").reindex(in_order).fillna({"diverged": 0}).reset_index()


def fraction_verdicts(means: pd.DataFrame, fraction: float) -> list[Verdict]:
    """The ASR and accuracy-drop bar for every judged defense at ``fraction``."""
    verdicts = []
    for row in means[(means["clean_fraction"] == fraction) & ~means["defense_label"].isin(NOT_JUDGED)].itertuples():
        drop = row.acc_before - row.acc_after
        passed = bool(row.asr_after < ASR_BAR and drop < DROP_BAR and row.diverged == 0)
        verdicts.append(Verdict(row.defense_label, row.attack_label, fraction, drop, row.asr_after, int(row.diverged), passed))
    return verdicts


def ftsam_beats_ft(means: pd.DataFrame, fraction: float) -> list[str]:
    """One line per attack: FT-SAM's against FT's mean ASR at ``fraction`` (empty when either is missing)."""
    at = means[means["clean_fraction"] == fraction].set_index(["defense_label", "attack_label"])["asr_after"]
    lines = []
    for attack in dict.fromkeys(means["attack_label"]):
        if ("ftsam", attack) in at.index and ("ft", attack) in at.index:
            sam, ft = at[("ftsam", attack)], at[("ft", attack)]
            lines.append(f"{attack:10} {fraction:5.2f}  ftsam ASR {100 * sam:5.1f} vs ft {100 * ft:5.1f}  {'pass' if sam < ft else 'FAIL'}")
    return lines


def run(command: list[str]) -> None:
    print("$ " + " ".join(command), flush=True)
    completed = subprocess.run(command)
    if completed.returncode != 0:
        sys.exit(f"{command[0]} {command[1]} failed with exit status {completed.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=Path, default=Path("grids/digits_defenses.yaml"))
    parser.add_argument("--results-dir", type=Path, required=True)
    args = parser.parse_args()

    grid = load_grid(args.grid)
    results_dir = str(args.results_dir.resolve())
    folder = args.results_dir.resolve() / grid.name
    run(["bench", "run", str(args.grid), "--results-dir", results_dir])
    run(["bench", "report", str(args.grid), "--results-dir", results_dir, "--format", "markdown", "--cost", "--no-plots",
         "--out", str(folder / "report")])
    print((folder / "report" / "leaderboard.md").read_text())

    rows = ResultStore(folder).load_cells([cell.cell_id for cell in expand(grid)])
    means = seed_means(rows)
    fractions = sorted(means["clean_fraction"].unique())
    print(f"Bar at clean fraction {fractions[-1]:g}: mean ASR < {100 * ASR_BAR:g}% and mean C-Acc drop < {100 * DROP_BAR:g} points")
    print(f"{'defense':12} {'attack':10} {'frac':>5} {'acc drop':>8} {'ASR':>7}")
    for verdict in fraction_verdicts(means, fractions[-1]):
        print(verdict.line())
    print(f"FT-SAM against vanilla FT at clean fraction {fractions[0]:g}:")
    print("\n".join(ftsam_beats_ft(means, fractions[0])))


if __name__ == "__main__":
    main()
