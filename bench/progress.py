"""Live progress of a sweep on the console: cells done / failed / pending, elapsed time."""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from bench.core import Status

_STYLE = {Status.OK.value: "green", Status.DIVERGED.value: "yellow", Status.FAILED.value: "red"}


class Progress:
    def __init__(self, total_cells: int, console: Console) -> None:
        self.total = total_cells
        self.console = console
        self.start = time.monotonic()
        self.counts = {status.value: 0 for status in Status}

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def _prefix(self) -> str:
        done = sum(self.counts.values())
        failed = self.counts[Status.FAILED.value]
        return f"[{self.elapsed:6.1f}s] {done}/{self.total} done · {failed} failed · {self.total - done} pending"

    def attack(self, tag: str, status: str, detail: str) -> None:
        style = _STYLE.get(status, "white")
        self.console.print(f"{self._prefix()}  [bold]model[/bold] {tag}: [{style}]{status}[/{style}] {detail}")

    def cell(self, tag: str, status: str, detail: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        style = _STYLE.get(status, "white")
        self.console.print(f"{self._prefix()}  {tag}: [{style}]{status}[/{style}] {detail}")


def summary_table(rows: list[dict], limit: int = 60) -> Table:
    """One line per cell (at most ``limit``): metrics after the defense, in percent; NaN as a dash."""
    table = Table(title="bench run: cells (after the defense, %)")
    for name in ("attack", "rho", "defense", "fraction", "seed", "C-Acc", "ASR", "RA", "DER", "status"):
        table.add_column(name, justify="left" if name in ("attack", "defense", "status") else "right", no_wrap=True)
    pct = lambda v: "—" if v != v else f"{100 * v:.1f}"  # noqa: E731
    for row in rows[:limit]:
        status = row["status"]
        table.add_row(
            row["attack_label"], f"{row['poison_ratio']:g}", row["defense_label"], f"{row['clean_fraction']:g}",
            str(row["seed"]), pct(row["acc_after"]), pct(row["asr_after"]), pct(row["ra_after"]), pct(row["der"]),
            f"[{_STYLE.get(status, 'white')}]{status}[/]",
        )
    if len(rows) > limit:
        table.caption = f"… {len(rows) - limit} more cells: see `bench report`"
    return table
