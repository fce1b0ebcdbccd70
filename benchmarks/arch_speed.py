"""Size and training speed of the registered architectures, side by side.

For each architecture: parameters, and the time of one forward + backward pass
(cross-entropy, training mode, no optimiser step) per image, for a batch of random
images on the current device: CUDA when visible, under the training loop's bf16
autocast, else the CPU in float32. Each row is the median over the timed iterations
(after ``--warmup`` untimed ones); timing stops early once ``--budget`` seconds are
spent and one iteration is timed. On CUDA the table also shows peak memory, what a
fractional-GPU trial must fit in.

On a CPU the batch is downsized per architecture so that the timed iterations fit
the budget: passes of 1, 2, 4, ... images (which also warm up) find the largest batch
that fits, and the ``batch`` column shows it. Per-image time on a CPU changes little
with the batch, except where a layer's cost is per batch (VGG's 103M-weight Linear),
which a small batch overstates. ``--exact`` keeps ``--batch`` everywhere. The defaults
run all architectures in about two minutes on two cores; ``--skip`` leaves some out.
On a CPU shared with other jobs use ``--threads 1``: torch's threads wait for each
other at every op, and on a busy machine each wait is long (30× slower, seen).

    python benchmarks/arch_speed.py                                  # all, batch 32, 32×32
    python benchmarks/arch_speed.py --skip vit_b_16 --skip densenet161
    python benchmarks/arch_speed.py 'resnet*' vgg19_bn --iters 50
    python benchmarks/arch_speed.py --exact --budget 600             # batch 32 on a CPU too
"""

from __future__ import annotations

import argparse
import fnmatch
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.core.archs import build_model
from bench.core.device import autocast, default_device, describe
from bench.core.data import DatasetSpec
from bench.core.registry import ARCHS


@dataclass(frozen=True)
class Speed:
    params: int
    batch: int  # images per timed iteration
    seconds: float  # median seconds per forward + backward iteration
    iters: int  # iterations timed
    peak_bytes: int | None  # peak CUDA memory of the timed iterations; None on a CPU


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    tick = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - tick


def measure(arch: str, spec: DatasetSpec, batch: int, device: torch.device, *,
            warmup: int, iters: int, budget: float, downsize: bool) -> Speed:
    model = build_model(arch, spec).to(device).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, spec.channels, spec.size, spec.size, generator=gen).to(device)
    y = torch.randint(0, spec.num_classes, (batch,), generator=gen).to(device)

    def step(n: int) -> None:
        model.zero_grad(set_to_none=True)
        with autocast(device):
            loss = F.cross_entropy(model(x[:n]), y[:n])
        loss.backward()

    if downsize:  # double from 1 while `iters` passes of twice the batch would fit the budget
        size = 1
        while size < batch and 2 * iters * _timed(lambda: step(size), device) <= budget:
            size = min(batch, 2 * size)
        batch = size
    for _ in range(warmup):
        step(batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < iters and (not times or time.perf_counter() - start < budget):
        times.append(_timed(lambda: step(batch), device))
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    params = sum(p.numel() for p in model.parameters())
    return Speed(params, batch, statistics.median(times), len(times), peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archs", nargs="*", default=["*"], help="fnmatch patterns of registered names (default: all)")
    parser.add_argument("--skip", action="append", default=[], help="fnmatch pattern of names to leave out; repeatable")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--device", default=None, help="torch device (default: CUDA when visible, else the CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations (default: 0 on a CPU, 5 on CUDA)")
    parser.add_argument("--iters", type=int, default=None, help="most timed iterations (default: 3 on CPU, 30 on CUDA)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timed iterations per architecture (default: 10 on a CPU, 30 on CUDA)")
    parser.add_argument("--exact", action="store_true", help="never downsize the batch on a CPU")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of torch (default: torch's); 1 where other jobs keep the cores busy")
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else default_device()
    cpu = device.type == "cpu"
    warmup = args.warmup if args.warmup is not None else (0 if cpu else 5)
    iters = args.iters if args.iters is not None else (3 if cpu else 30)
    budget = args.budget if args.budget is not None else (10.0 if cpu else 30.0)
    names = [n for n in ARCHS.names() if any(fnmatch.fnmatchcase(n, p) for p in args.archs)]
    names = [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in args.skip)]
    c = args.channels
    spec = DatasetSpec("speed", c, args.size, args.classes, mean=(0.5,) * c, std=(0.25,) * c)

    precision = "bf16 autocast" if device.type == "cuda" else "float32"  # as bench.core.device.autocast
    threads = f", {torch.get_num_threads()} threads" if cpu else ""
    where = f"{describe(device)}{threads}, {precision}"
    print(f"{where}, torch {torch.__version__}; {c}×{args.size}×{args.size} images, {args.classes} classes; "
          f"forward + backward, median of up to {iters} timed iterations after {warmup} warm-up")
    print(f"{'arch':20} {'params':>9} {'batch':>5} {'ms/image':>9} {'images/s':>9} {'iters':>5} {'peak MiB':>9}")
    for name in names:
        try:
            r = measure(name, spec, args.batch, device, warmup=warmup, iters=iters, budget=budget,
                        downsize=cpu and not args.exact)
        except RuntimeError as err:  # e.g. out of memory: say so and go on with the others
            print(f"{name:20} failed: {str(err).splitlines()[0]}", flush=True)
            continue
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        per_image = r.seconds / r.batch
        peak = f"{r.peak_bytes / 2**20:9.0f}" if r.peak_bytes is not None else f"{'-':>9}"
        print(f"{name:20} {r.params / 1e6:8.2f}M {r.batch:5d} {1e3 * per_image:9.2f} {1 / per_image:9.1f} "
              f"{r.iters:5d} {peak}", flush=True)


if __name__ == "__main__":
    main()
