"""Joining or starting Ray, and fitting a grid's per-trial resources to the cluster."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class TrialResources:
    """Per-trial resources, and how many such trials the whole cluster fits at once (``slots``)."""

    cpu: float
    gpu: float
    slots: int
    notices: tuple[str, ...] = ()


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Use a running Ray (already initialised, or at ``address``), or start a local one and stop it after."""
    import ray

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet = {"log_to_driver": False, "logging_level": "ERROR"}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **quiet)
    try:
        yield
    finally:
        ray.shutdown()


def fit_resources(cpu: float, gpu: float) -> TrialResources:
    """Degrade requests no node can meet: GPUs on a cluster without GPUs, more CPUs than any node has."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    max_cpu = max((n.get("CPU", 0.0) for n in nodes), default=1.0)
    max_gpu = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    notices = []
    if gpu > 0 and max_gpu == 0:
        notices.append(f"no GPU in the Ray cluster: trials asked for {gpu} GPU and run on the CPU instead")
        gpu = 0.0
    elif gpu > max_gpu:
        notices.append(f"trials asked for {gpu} GPUs; the largest node has {max_gpu}, so each trial takes {max_gpu}")
        gpu = max_gpu
    if cpu > max_cpu:
        notices.append(f"trials asked for {cpu} CPUs; the largest node has {max_cpu}, so each trial takes {max_cpu}")
        cpu = max_cpu
    total = ray.cluster_resources()
    slots = int(total.get("CPU", 1.0) // cpu)
    if gpu > 0:
        slots = min(slots, int(total.get("GPU", 0.0) // gpu))
    return TrialResources(cpu, gpu, max(1, slots), tuple(notices))
