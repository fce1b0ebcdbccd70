"""Efficacy of attacks without Ray (digits by default): clean accuracy and ASR of each backdoored model.

Trains one clean small_cnn (rho → no poison: the ``none`` row) and one backdoored model per
named attack at the given poison ratio, with the quickstart's training settings, and
prints clean accuracy, ASR and RA side by side. Backdoored models are cached under ``--cache``
(a verified artifact is reused; its ``sec`` is then the time to read it), and so is the clean
accuracy (``clean-*.json``), in a folder named by the digest of the images and labels: a
dataset whose generator changes is never answered from the cache of its earlier images.

    python benchmarks/attack_check.py badnets blended --rho 0.1
    python benchmarks/attack_check.py blended --param alpha=0.1 --mode all2all
    python benchmarks/attack_check.py sig lc ctrl --dataset synthetic32 --rho 0.1
    python benchmarks/attack_check.py sig ctrl --dataset synthetic32 --rho 0.09 --epochs 8
    python benchmarks/attack_check.py sig ctrl --dataset synthetic32 --classes 40 --train-size 8000 --rho 0.025
    python benchmarks/attack_check.py ctrl --dataset synthetic32 --classes 40 --train-size 16000 --rho 0.025 --margins

``--dataset`` takes a registered dataset or a benchmark-only one (``BENCHMARK_DATASETS``):
``synthetic32``, the synthetic 32×32 RGB set of ``benchmarks/synthetic.py``, learnable
but not trivially (as CIFAR-10), with balanced classes (clean-label rho up to 0.1),
where the clean-label attacks can be shown; the digits' target class is too easy. There,
rho 0.1 poisons every image of the target class (as BackdoorBench's pratio 0.1 on
CIFAR-10), so a clean-label model predicts the target only with the trigger and loses
that class's clean accuracy; rho 0.05 leaves half of it clean. ``--train-size`` sets its
number of training images (default 4,000): more poisoned images at the same rho;
``--test-size`` its test images (default 1,000); ``--classes`` its class count (default 10;
both sizes must divide by it): the whole target class is ``1 / classes`` of the set (rho
0.025 with 40 classes); ``--noise`` its white pixel noise (default 0.02; 0 leaves the
highest frequencies nearly empty, as in photographs, where CTRL's frequency trigger
stands out).

``--margins`` also prints, per quartile of the clean margin (true-class minus target logit
on the clean test image), how much the trigger raises the target logit and lowers the
true-class one, and the ASR (``benchmarks/margins.py``): where a trigger wins and why it
stops short. ``--lr`` and ``--batch-size`` change the training of every model;
``--no-clean`` skips the clean baseline. ``--no-augment`` trains every model without the
dataset's random crop and flip: they shift and mirror a fixed trigger, so each training
copy carries it at another phase (for CTRL's near-Nyquist pattern, as often negated as not).

An attack whose poison ratio the training set cannot realise (a clean-label ratio above
the target class's share) is reported and skipped; the others still run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import torch
import yaml

from bench.core.archs import build_seeded_model
from bench.core.datasets import load_dataset
from bench.core.device import default_device
from bench.core.hashing import stable_id
from bench.core.data import Augmentation, DataOptions, LoadedDataset
from bench.core.metrics import accuracy, logits, predict
from bench.core.pipeline import AttackStageSpec, attack_outcome_from_artifact, load_backdoored, run_attack_stage
from bench.core.poison import PoisonRatioError, Target, target_labels
from bench.core.registry import ATTACKS
from bench.core.seeding import derive_seed, make_generator
from bench.core.train import TrainConfig, train
from margins import margin_bands  # benchmarks/margins.py, beside this script
from synthetic import synthetic32  # benchmarks/synthetic.py, beside this script

TRAIN = TrainConfig(epochs=15, batch_size=64, lr=0.05)
BENCHMARK_DATASETS: dict[str, Callable[..., LoadedDataset]] = {"synthetic32": synthetic32}  # not in DATASETS


def load_data(name: str, options: dict[str, float]) -> LoadedDataset:
    """A benchmark-only dataset by name, built with keyword ``options`` (e.g. ``n_train``), else the registered
    one (``load_dataset``, under ./data; ``options`` must then be empty)."""
    if name in BENCHMARK_DATASETS:
        return BENCHMARK_DATASETS[name](**options)
    if options:
        only = ", ".join(BENCHMARK_DATASETS)
        raise SystemExit(f"--train-size, --test-size, --classes and --noise apply only to {only}, not {name}")
    return load_dataset(name, DataOptions(Path("data")))


def dataset_options(
    train_size: int | None, test_size: int | None, classes: int | None, noise: float | None
) -> dict[str, float]:
    """The keyword options of a benchmark-only dataset that were given.

    Its keys are among ``n_train``, ``n_test``, ``num_classes`` and ``noise_std``.
    """
    given = {"n_train": train_size, "n_test": test_size, "num_classes": classes, "noise_std": noise}
    return {k: v for k, v in given.items() if v is not None}


def data_digest(data: LoadedDataset) -> str:
    """16 hex digits of sha256 over the training and test images and labels."""
    digest = hashlib.sha256()
    for tensor in (data.train.x, data.train.y, data.test.x, data.test.y):
        digest.update(tensor.contiguous().cpu().numpy())
    return digest.hexdigest()[:16]


def without_augmentation(data: LoadedDataset) -> LoadedDataset:
    """``data`` whose spec declares no training-time augmentation (no crop, no flip)."""
    return dataclasses.replace(data, spec=dataclasses.replace(data.spec, augmentation=Augmentation()))


def clean_accuracy(data, seed: int, cfg: TrainConfig) -> float:
    """Accuracy of a model trained on the clean training set with the same settings."""
    device = default_device()
    model = build_seeded_model("small_cnn", data.spec, derive_seed(seed, "clean-baseline", "init")).to(device)
    train(model, data.train.to(device), cfg, data.spec.augmentation, make_generator(seed, "clean-baseline"))
    return accuracy(predict(model, data.test.x), data.test.y.to(device))


def cached_clean_accuracy(data, seed: int, cfg: TrainConfig, path: Path) -> float:
    """``clean_accuracy``, read from the JSON file ``path`` when present, else computed and written there."""
    if path.is_file():
        return float(json.loads(path.read_text())["acc"])
    acc = clean_accuracy(data, seed, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"acc": acc}))
    return acc


def print_margin_bands(spec: AttackStageSpec, data: LoadedDataset, artifact_dir: Path) -> None:
    """The backdoored model's ASR, trigger boost and drop per quartile of the clean margin (``benchmarks/margins.py``)."""
    loaded = load_backdoored(spec, data, artifact_dir, default_device())
    y_target = target_labels(data.test.y, spec.target, data.spec.num_classes)
    keep = torch.nonzero(y_target != data.test.y).flatten()  # the images of the triggered test set, in its order
    clean = logits(loaded.model, data.test.x[keep]).float().cpu()
    triggered = logits(loaded.model, loaded.backdoor_test.x).float().cpu()
    for i, band in enumerate(margin_bands(clean, triggered, data.test.y[keep], y_target[keep])):
        print(f"{'':14} margin quartile {i + 1}: margin {band.margin:6.2f} boost {band.boost:6.2f} "
              f"drop {band.drop:6.2f} asr {100 * band.asr:5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("attacks", nargs="+")
    parser.add_argument("--param", action="append", default=[], help="NAME=VALUE for every named attack (YAML value)")
    parser.add_argument("--rho", type=float, default=0.1)
    parser.add_argument("--mode", choices=("all2one", "all2all"), default="all2one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=TRAIN.epochs, help="training epochs of every model, the clean one too")
    parser.add_argument("--lr", type=float, default=TRAIN.lr, help="peak learning rate of every model (cosine schedule)")
    parser.add_argument("--batch-size", type=int, default=TRAIN.batch_size, help="training batch size of every model")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--train-size", type=int, help=f"training images of {', '.join(BENCHMARK_DATASETS)} (default: its own)")
    parser.add_argument("--test-size", type=int, help=f"test images of {', '.join(BENCHMARK_DATASETS)} (default: its own)")
    parser.add_argument("--classes", type=int, help=f"class count of {', '.join(BENCHMARK_DATASETS)} (default: its own)")
    parser.add_argument("--noise", type=float, help=f"pixel-noise std of {', '.join(BENCHMARK_DATASETS)}, in [0, 1] units (default: its own)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench-attack-check"))
    parser.add_argument("--no-clean", action="store_true", help="skip the clean baseline (e.g. while another run computes it)")
    parser.add_argument("--no-augment", action="store_true", help="train every model without the dataset's crop and flip")
    parser.add_argument("--margins", action="store_true",
                        help="also print each model's ASR and the trigger's effect on the logits per quartile of the clean margin")
    args = parser.parse_args()

    raw = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in args.param)}
    cfg = dataclasses.replace(TRAIN, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size)
    data = load_data(args.dataset, dataset_options(args.train_size, args.test_size, args.classes, args.noise))
    if args.no_augment:
        data = without_augmentation(data)
    # never the cache of other images, or of the same images trained otherwise: the key does not see either
    cache = args.cache / f"{data_digest(data)}{'-no-augment' if args.no_augment else ''}"
    base = {"dataset": args.dataset, "seed": args.seed, "train": dataclasses.asdict(cfg)}
    clean_path = cache / f"clean-{stable_id({'check': 'clean', **base})}.json"
    print(f"{'attack':14} {'acc':>6} {'asr':>6} {'ra':>6} {'poisoned':>8} {'sec':>6}")
    if not args.no_clean:
        start = time.perf_counter()
        clean = cached_clean_accuracy(data, args.seed, cfg, clean_path)
        print(f"{'(clean)':14} {100 * clean:6.1f} {'':>6} {'':>6} {0:8d} {time.perf_counter() - start:6.1f}")
    for name in args.attacks:
        params = ATTACKS.get(name).Params(**raw)
        target = Target(mode=args.mode)
        spec = AttackStageSpec(args.dataset, "small_cnn", name, params, args.rho, target, args.seed, cfg)
        start = time.perf_counter()
        try:
            outcome = attack_outcome_from_artifact(cache / spec.key) or run_attack_stage(spec, data, cache / spec.key)
        except PoisonRatioError as error:  # e.g. a clean-label ratio the target class cannot supply
            print(f"{name:14} not run: {error}")
            continue
        m = outcome.metrics
        print(f"{name:14} {100 * m.acc:6.1f} {100 * m.asr:6.1f} {100 * m.ra:6.1f} {outcome.n_poison:8d} {time.perf_counter() - start:6.1f}")
        if args.margins:
            print_margin_bands(spec, data, cache / spec.key)


if __name__ == "__main__":
    main()
