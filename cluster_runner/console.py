"""The console every command prints through, and what ``runner submit`` prints: a line per run and
the per-stage table.

On a terminal the console is rich's own: the terminal's width, colours. Piped or redirected,
output is for programs and files (issue 17): no colour codes, no wrapping (a suggested command
stays whole on one line, however long), and no trailing spaces (rich pads table titles and
cells to the table's width). :func:`plural` keeps counts and nouns in agreement ("1 worker").
"""

from __future__ import annotations

import statistics
import sys
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from cluster_runner.results import RunRecord

#: Width of a console that is not a terminal: wide enough that nothing wraps.
UNWRAPPED = 100_000


class TrimmedLines:
    """A text stream that drops the spaces at the end of each line written through it.

    Whitespace at the end of what has been written so far is held back until the line goes on
    (then written) or ends (then dropped), so that a flush in mid-line changes nothing.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._held = ""

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        *lines, last = (self._held + text).split("\n")
        kept = last.rstrip()
        self._held = last[len(kept) :]
        self.stream.write("".join(f"{line.rstrip()}\n" for line in lines) + kept)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def console(stderr: bool = False) -> Console:
    """The console every command prints through (see the module docstring)."""
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return Console(stderr=stderr, highlight=False)
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=TrimmedLines(stream), highlight=False, width=UNWRAPPED, soft_wrap=True)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """The count and its noun, agreeing: ``1 worker``, ``2 workers``, ``3 processes``."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def print_json(data: Any) -> None:
    """``data`` as one JSON document on stdout, for ``--json``: nothing else goes there."""
    import json

    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


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
    again = f", {plural(retried, 'task')} retried" if retried else ""
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
