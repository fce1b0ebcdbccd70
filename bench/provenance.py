"""Where a result came from: code version, commit, library versions, time."""

from __future__ import annotations

import datetime
import subprocess
from dataclasses import dataclass
from pathlib import Path

import bench


@dataclass(frozen=True)
class Provenance:
    bench_version: str
    git_commit: str
    torch_version: str


def git_commit(directory: Path) -> str:
    """The commit checked out at ``directory`` (with ``+dirty`` for local changes), or ``unknown``."""
    try:
        run = lambda *args: subprocess.run(  # noqa: E731
            ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        return commit + ("+dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def current() -> Provenance:
    import torch

    return Provenance(bench.__version__, git_commit(Path(bench.__file__).resolve().parent), torch.__version__)


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
