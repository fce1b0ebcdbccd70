"""Efficacy check of one defense on digits, without Ray: ASR and clean accuracy before → after.

Trains (or reuses, from ``--cache``) the backdoored small_cnn models of the quickstart's
attack setting (BadNets and Blended at rho 0.1, one per seed), then applies the defense
at each clean fraction and prints one line per (attack, fraction) with means over seeds.

    python benchmarks/defense_check.py ftsam --param epochs=20 --param batch_size=32
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import yaml

from bench.core.artifacts import verify_artifact
from bench.core.datasets import load_dataset
from bench.core.data import DataOptions
from bench.core.pipeline import AttackStageSpec, DefenseStageSpec, run_attack_stage, run_defense_stage
from bench.core.poison import Target
from bench.core.registry import ATTACKS, DEFENSES
from bench.core.train import TrainConfig

TRAIN = TrainConfig(epochs=15, batch_size=64, lr=0.05)
ATTACK_SETTINGS = {"badnets": {}, "blended": {"alpha": 0.2}}


def attack_spec(attack: str, seed: int, rho: float) -> AttackStageSpec:
    params = ATTACKS.get(attack).Params(**ATTACK_SETTINGS[attack])
    return AttackStageSpec("digits", "small_cnn", attack, params, rho, Target(), seed, TRAIN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("defense")
    parser.add_argument("--param", action="append", default=[], help="NAME=VALUE (YAML value), repeatable")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--fractions", default="0.05,0.01")
    parser.add_argument("--attacks", default="badnets,blended")
    parser.add_argument("--rho", type=float, default=0.1)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench-check"))
    args = parser.parse_args()

    raw = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in args.param)}
    params = DEFENSES.get(args.defense).Params(**raw)
    data = load_dataset("digits", DataOptions(Path("data")))
    print(f"{args.defense} {params}")
    print(f"{'attack':10} {'frac':>5} {'acc before':>10} {'acc after':>10} {'asr before':>10} {'asr after':>10} {'sec':>6}")
    for attack in args.attacks.split(","):
        for fraction in (float(f) for f in args.fractions.split(",")):
            rows = []
            for seed in range(args.seeds):
                spec = attack_spec(attack, seed, args.rho)
                artifact = args.cache / spec.key
                if not verify_artifact(artifact):
                    run_attack_stage(spec, data, artifact)
                cell = DefenseStageSpec(spec, args.defense, params, fraction)
                start = time.perf_counter()
                outcome = run_defense_stage(cell, data, artifact)
                after = outcome.after
                rows.append((outcome.before.acc, after.acc if after else float("nan"),
                             outcome.before.asr, after.asr if after else float("nan"), time.perf_counter() - start))
            means = [statistics.fmean(column) for column in zip(*rows)]
            print(f"{attack:10} {fraction:5.2f} " + " ".join(f"{100 * m:10.1f}" for m in means[:4]) + f" {means[4]:6.1f}")


if __name__ == "__main__":
    main()
