"""Efficacy of attacks without Ray (digits by default): clean accuracy and ASR of each backdoored model.

Trains one clean small_cnn (rho → no poison: the ``none`` row) and one backdoored model per
named attack at the given poison ratio, with the quickstart's training settings, and
prints clean accuracy, ASR and RA side by side. Backdoored models are cached under ``--cache``
(a verified artifact is reused; its ``sec`` is then the time to read it).

    python benchmarks/attack_check.py badnets blended --rho 0.1
    python benchmarks/attack_check.py blended --param alpha=0.1 --mode all2all
    python benchmarks/attack_check.py sig lc ctrl --dataset synthetic32 --rho 0.1

``--dataset`` takes a registered dataset or a benchmark-only one (``BENCHMARK_DATASETS``):
``synthetic32``, the synthetic 32×32 RGB set of ``benchmarks/synthetic.py``, learnable
but not trivially (as CIFAR-10), with balanced classes (clean-label rho up to 0.1),
where the clean-label attacks can be shown; the digits' target class is too easy. There,
rho 0.1 poisons every image of the target class (as BackdoorBench's pratio 0.1 on
CIFAR-10), so a clean-label model predicts the target only with the trigger and loses
that class's clean accuracy; rho 0.05 leaves half of it clean.

An attack whose poison ratio the training set cannot realise (a clean-label ratio above
the target class's share) is reported and skipped; the others still run.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Callable

import yaml

from bench.archs import build_seeded_model
from bench.cells import stable_hash
from bench.datasets import load_dataset
from bench.device import default_device
from bench.imageset import DataOptions, LoadedDataset
from bench.metrics import accuracy, predict
from bench.pipeline import AttackStageSpec, attack_outcome_from_artifact, run_attack_stage
from bench.poison import PoisonRatioError, Target
from bench.registry import ATTACKS
from bench.seeding import derive_seed, make_generator
from bench.train import TrainConfig, train
from synthetic import synthetic32  # benchmarks/synthetic.py, beside this script

TRAIN = TrainConfig(epochs=15, batch_size=64, lr=0.05)
BENCHMARK_DATASETS: dict[str, Callable[[], LoadedDataset]] = {"synthetic32": synthetic32}  # not in DATASETS


def load_data(name: str) -> LoadedDataset:
    """A benchmark-only dataset by name, else the registered one (``load_dataset``, under ./data)."""
    if name in BENCHMARK_DATASETS:
        return BENCHMARK_DATASETS[name]()
    return load_dataset(name, DataOptions(Path("data")))


def clean_accuracy(data, seed: int, cfg: TrainConfig) -> float:
    """Accuracy of a model trained on the clean training set with the same settings."""
    device = default_device()
    model = build_seeded_model("small_cnn", data.spec, derive_seed(seed, "clean-baseline", "init")).to(device)
    train(model, data.train.to(device), cfg, data.spec.augmentation, make_generator(seed, "clean-baseline"))
    return accuracy(predict(model, data.test.x), data.test.y.to(device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("attacks", nargs="+")
    parser.add_argument("--param", action="append", default=[], help="NAME=VALUE for every named attack (YAML value)")
    parser.add_argument("--rho", type=float, default=0.1)
    parser.add_argument("--mode", choices=("all2one", "all2all"), default="all2one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=TRAIN.epochs, help="training epochs of every model, the clean one too")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench-attack-check"))
    args = parser.parse_args()

    raw = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in args.param)}
    cfg = dataclasses.replace(TRAIN, epochs=args.epochs)
    data = load_data(args.dataset)
    print(f"{'attack':14} {'acc':>6} {'asr':>6} {'ra':>6} {'poisoned':>8} {'sec':>6}")
    print(f"{'(clean)':14} {100 * clean_accuracy(data, args.seed, cfg):6.1f} {'':>6} {'':>6} {0:8d}")
    for name in args.attacks:
        params = ATTACKS.get(name).Params(**raw)
        target = Target(mode=args.mode)
        content = {"check": name, "params": dataclasses.asdict(params), "rho": args.rho, "mode": args.mode,
                   "dataset": args.dataset, "seed": args.seed, "train": dataclasses.asdict(cfg)}
        spec = AttackStageSpec(stable_hash(content), args.dataset, "small_cnn", name, params, args.rho, target, args.seed, cfg)
        start = time.perf_counter()
        try:
            outcome = attack_outcome_from_artifact(args.cache / spec.key) or run_attack_stage(spec, data, args.cache / spec.key)
        except PoisonRatioError as error:  # e.g. a clean-label ratio the target class cannot supply
            print(f"{name:14} not run: {error}")
            continue
        m = outcome.metrics
        print(f"{name:14} {100 * m.acc:6.1f} {100 * m.asr:6.1f} {100 * m.ra:6.1f} {outcome.n_poison:8d} {time.perf_counter() - start:6.1f}")


if __name__ == "__main__":
    main()
