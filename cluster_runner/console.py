"""The console every command prints through, and what ``runner submit`` prints: a line per run and
the per-stage table.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from cluster_runner.results import RunRecord


def console(stderr: bool = False) -> Console:
    """The console every command prints through: plain text, 120 columns, when not a terminal."""
    probe = Console(stderr=stderr)
    width = None if probe.is_terminal else 120
    return Console(stderr=stderr, highlight=False, width=width)


def run_line(record: RunRecord, total: int) -> str:
    """One line for a finished run: its number, status and wall time."""
    mark = {
        "verified": "[green]verified[/]",
        "unverified": "[red]NOT verified[/]",
        "failed": "[red]failed[/]",
    }.get(record.status, record.status)
    label = "warm-up" if record.warmup else "run"
    stages = ", ".join(f"{s.name} {s.wall_s:.3f} s" for s in record.stages)
    retried = sum(s.retried for s in record.stages)
    again = f", {retried} task(s) retried" if retried else ""
    return f"{label} {record.repeat + 1}/{total}: {mark} in {record.wall_s:.3f} s ({stages}{again})"


def stage_table(records: list[RunRecord]) -> Table:
    """Per stage over the given runs: tasks, wall time (median, range), result, verified, spread."""
    table = Table(title="stages", title_justify="left")
    for column, justify in (
        ("stage", "left"),
        ("tasks", "right"),
        ("wall s (median)", "right"),
        ("min-max s", "right"),
        ("result", "left"),
        ("verified", "left"),
        ("workers used", "right"),
    ):
        table.add_column(column, justify=justify)
    if not records:
        return table
    workers = records[0].backend.workers
    for i, stage in enumerate(records[0].stages):
        runs = [r.stages[i] for r in records if len(r.stages) > i]
        walls = [s.wall_s for s in runs]
        ok = all(s.result.verified for s in runs)
        used = max(len(s.placement.workers_used) for s in runs)
        table.add_row(
            stage.name,
            str(stage.tasks),
            f"{statistics.median(walls):.3f}",
            f"{min(walls):.3f}-{max(walls):.3f}",
            escape(stage.result.display),
            "[green]yes[/]" if ok else f"[red]NO[/] ({escape(stage.result.verification)})",
            f"{used}/{workers}",
        )
    return table


#: Numbers and ranges as the tables show them (shared with :mod:`cluster_runner.analysis.report`).
def number_text(value: float | None, spec: str, scale: float = 1.0, none: str = "-") -> str:
    return none if value is None else format(value * scale, spec)


def range_text(bounds: tuple[float | None, float | None] | None, spec: str) -> str:
    if not bounds or bounds[0] is None or bounds[1] is None:
        return "-"
    low, high = format(bounds[0], spec), format(bounds[1], spec)
    return low if low == high else f"{low}-{high}"
