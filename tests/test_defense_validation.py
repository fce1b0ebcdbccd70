"""The validation sweep's verdicts: seed means, the ASR and accuracy-drop bar, FT-SAM against FT."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmarks.defense_validation import fraction_verdicts, ftsam_beats_ft, seed_means


def row(defense: str, fraction: float, acc_after: float, asr_after: float, *, attack: str = "badnets",
        acc_before: float = 0.99, status: str = "ok") -> dict:
    if status == "diverged":
        acc_after = asr_after = math.nan
    return {"defense_label": defense, "attack_label": attack, "clean_fraction": fraction, "status": status,
            "acc_before": acc_before, "acc_after": acc_after, "asr_after": asr_after}


def verdicts(rows: list[dict], fraction: float = 0.05) -> dict[str, bool]:
    return {v.defense: v.passed for v in fraction_verdicts(seed_means(pd.DataFrame(rows)), fraction)}


def test_seed_means_average_over_seeds_per_defense_attack_fraction():
    means = seed_means(pd.DataFrame([row("fip", 0.05, 0.96, 0.10), row("fip", 0.05, 0.94, 0.30), row("fip", 0.01, 0.9, 0.5)]))
    at = means.set_index("clean_fraction")
    assert at.loc[0.05, "acc_after"] == pytest.approx(0.95) and at.loc[0.05, "asr_after"] == pytest.approx(0.20)
    assert at.loc[0.01, "asr_after"] == pytest.approx(0.5)
    assert (means["diverged"] == 0).all()


def test_bar_needs_low_asr_and_small_accuracy_drop():
    got = verdicts([
        row("good", 0.05, 0.96, 0.19),   # drop 3, ASR 19: pass
        row("leaky", 0.05, 0.98, 0.21),  # ASR over 20%
        row("costly", 0.05, 0.93, 0.01),  # drop 6 points
    ])
    assert got == {"good": True, "leaky": False, "costly": False}


def test_verdicts_follow_the_rows_order():
    rows = [row("sft", 0.05, 0.97, 0.0), row("fip", 0.05, 0.97, 0.0), row("ngf", 0.05, 0.97, 0.0)]
    assert list(verdicts(rows)) == ["sft", "fip", "ngf"]


def test_baselines_are_not_judged_and_other_fractions_are_ignored():
    got = verdicts([row("none", 0.05, 0.99, 0.98), row("ft", 0.05, 0.99, 0.9), row("sft", 0.01, 0.5, 0.9), row("sft", 0.05, 0.97, 0.0)])
    assert got == {"sft": True}


def test_a_diverged_seed_fails_the_defense_even_when_the_others_pass():
    rows = [row("fast_fip", 0.05, 0.98, 0.0), row("fast_fip", 0.05, 0.98, 0.0, status="diverged")]
    (verdict,) = fraction_verdicts(seed_means(pd.DataFrame(rows)), 0.05)
    assert verdict.diverged == 1 and not verdict.passed
    assert "1 diverged" in verdict.line()


def test_ftsam_against_ft_per_attack():
    means = seed_means(pd.DataFrame([
        row("ft", 0.01, 0.98, 0.9), row("ftsam", 0.01, 0.95, 0.2),
        row("ft", 0.01, 0.98, 0.5, attack="blended"), row("ftsam", 0.01, 0.95, 0.6, attack="blended"),
    ]))
    badnets, blended = ftsam_beats_ft(means, 0.01)
    assert badnets.startswith("badnets") and badnets.endswith("pass")
    assert blended.startswith("blended") and blended.endswith("FAIL")
    assert ftsam_beats_ft(means, 0.05) == []
