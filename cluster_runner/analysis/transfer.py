"""What moved between the driver and the workers, per point: the report's transfer columns.

Since issue 21 a record says, per stage, how the driver's inputs travelled and what moved
(:class:`~cluster_runner.results.stages.Transfer`): ``share`` places each input once (shared
memory, Ray's object store, a Dask scatter, a reference in-process) and tasks carry a handle;
``copy`` (``--transfer copy``) sends the input inside every task's message. A report shows, per
point, the median over its counted runs of the bytes that moved and of the driver's time to
place the inputs, with that time's share of the run.

What each figure is, exactly, because the two modes do not cost in the same place:

- ``moved``: bytes of driver input moved in a run, every stage summed: the copies placed
  once (times the copies a broadcast made) plus carried by task messages. 0 for ``serial`` and
  ``threads``, which share by reference.
- ``put``: the driver's time to place the inputs once, before the tasks; it is inside the run's
  wall time. In ``copy`` mode nothing is placed: the data is pickled and sent inside the tasks'
  messages, so its cost is part of the tasks' time and is not timed apart. The report says
  "in tasks" there rather than a misleading 0 s (and JSON has null).

Only runs with driver inputs keep these numbers (:class:`TransferRuns`, created at the first
such run of a point), so a report of records without inputs (older files; workloads that draw
their data inside the tasks) keeps what it kept and shows exactly what it showed.
"""

from __future__ import annotations

import math
import statistics
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster_runner.analysis.aggregate import Experiment, PointStats
    from cluster_runner.results import RunRecord

#: A run's numbers kept per point, in this order (:func:`run_transfer`).
FIELDS = ("put_s", "moved_bytes", "sent_bytes", "messages", "returned_bytes")


def run_transfer(record: RunRecord) -> tuple[str, str, int, tuple[float, ...]] | None:
    """A run's transfer, its stages summed: ``(mode, method, input_bytes, numbers)`` with the
    numbers of :data:`FIELDS`; None when no stage had driver inputs (or none recorded them)."""
    moved = [s.transfer for s in record.stages if s.transfer is not None and s.transfer.inputs]
    if not moved:
        return None
    methods = ", ".join(dict.fromkeys(t.method for t in moved if t.method))
    numbers = (
        sum(t.put_s for t in moved),
        sum(t.moved_bytes for t in moved),
        sum(t.sent_bytes for t in moved),
        sum(t.messages for t in moved),
        sum(t.returned_bytes for t in moved),
    )
    return moved[0].mode, methods, sum(t.input_bytes for t in moved), numbers


class TransferRuns:
    """One point's transfer numbers, a run at a time, aligned with its counted runs (NaN: a run
    without them). Made at the point's first run with driver inputs, padded for the runs
    before it."""

    def __init__(self, mode: str, method: str, input_bytes: int, before: int) -> None:
        self.mode, self.method, self.input_bytes = mode, method, input_bytes
        self.columns = {name: array("d", [math.nan]) * before for name in FIELDS}

    def add(self, numbers: Sequence[float] | None) -> None:
        for name, value in zip(FIELDS, numbers or (math.nan,) * len(FIELDS), strict=True):
            self.columns[name].append(value)

    def pad(self, runs: int) -> None:
        """Runs without driver inputs: NaN in every column."""
        for column in self.columns.values():
            column.extend(array("d", [math.nan]) * runs)

    def extend(self, later: TransferRuns) -> None:
        for name in FIELDS:
            self.columns[name].extend(later.columns[name])


@dataclass(frozen=True)
class PointTransfer:
    """What a point's runs moved (medians over its counted runs with driver inputs)."""

    mode: str  # share: placed once; copy: sent inside every task message (--transfer)
    method: str  # how, in words: "shared memory", "ray.put (object store)", "by reference"
    input_bytes: int  # the driver inputs' size, serialised, every stage summed
    moved_bytes: int  # placed once plus carried by task messages, a run
    sent_bytes: int  # of which carried by task messages (handles, or the data when copied)
    messages: int  # task messages that carried an input, a run
    returned_bytes: int  # task results that reached the driver, a run
    put_s: float | None  # the driver placing the inputs once; None in copy mode (in tasks)
    put_share: float | None  # put_s over the run's wall time (median of the runs' shares)


def point_transfer(
    runs: TransferRuns | None, keep: Sequence[int], walls: Sequence[float]
) -> PointTransfer | None:
    """A point's :class:`PointTransfer` from its runs ``keep`` (indices into the folded runs;
    ``walls``: all their wall times); None when none of them had driver inputs."""
    if runs is None:
        return None
    cols = runs.columns
    kept = [i for i in keep if not math.isnan(cols["moved_bytes"][i])]
    if not kept:
        return None

    def med(name: str) -> float:
        return statistics.median(cols[name][i] for i in kept)

    copy = runs.mode == "copy"
    shares = [cols["put_s"][i] / walls[i] for i in kept if walls[i] > 0]
    return PointTransfer(
        mode=runs.mode,
        method=runs.method,
        input_bytes=runs.input_bytes,
        moved_bytes=round(med("moved_bytes")),
        sent_bytes=round(med("sent_bytes")),
        messages=round(med("messages")),
        returned_bytes=round(med("returned_bytes")),
        put_s=None if copy else med("put_s"),
        put_share=None if copy or not shares else statistics.median(shares),
    )


# --- in the report ----------------------------------------------------------------------------


def transfer_mode(points: Sequence[PointStats]) -> str | None:
    """The report's transfer mode (one per experiment, :mod:`.identity`); None when no point
    had driver inputs, and the report shows no transfer column."""
    return next((p.transfer.mode for p in points if p.transfer is not None), None)


def columns(mode: str) -> list[tuple[str, Callable[[PointStats], str]]]:
    """The run-times table's transfer columns: bytes moved, and the put time with its share."""
    return [(f"moved ({mode})", moved_cell), ("put (of run)", put_cell)]


def moved_cell(p: PointStats) -> str:
    t = p.transfer
    if t is None:
        return "-"
    return bytes_text(t.moved_bytes) + (" by reference" if t.method == "by reference" else "")


def put_cell(p: PointStats) -> str:
    t = p.transfer
    if t is None:
        return "-"
    if t.put_s is None:
        return "in tasks"
    share = t.put_share
    pct = "-" if share is None else "<1%" if 0 < share < 0.005 else f"{share:.0%}"
    return f"{seconds_text(t.put_s)} ({pct})"


def notes(points: Sequence[PointStats]) -> list[str]:
    """What the transfer columns mean, and how each backend moved the inputs."""
    mode = transfer_mode(points)
    if mode is None:
        return []
    how = dict.fromkeys(
        f"{p.backend.split(' ', 1)[0]}: {p.transfer.method}"
        for p in points
        if p.transfer is not None and p.transfer.method
    )
    sizes = dict.fromkeys(bytes_text(p.transfer.input_bytes) for p in points if p.transfer)
    moved = (
        f"moved ({mode}, --transfer {mode}): bytes of driver input ({' or '.join(sizes)})"
        " moved in a run, median: "
    )
    if mode == "copy":
        return [
            moved + f"a copy inside each task message ({'; '.join(how)}). put: in tasks: the"
            " data travels inside every task's message, so its cost is part of the tasks' time"
            " and is not timed apart."
        ]
    return [
        moved + "the copies placed (once in shared memory or Ray's object store, once per Dask"
        f" worker that held it), plus the handles the task messages carried ({'; '.join(how)})."
        " put: the driver's time to place the inputs once, before the tasks (inside the run's"
        " wall time), and its share of the run."
    ]


def csv_fields(p: PointStats) -> dict[str, object]:
    """The transfer's CSV columns of a point (empty cells when it had no driver inputs)."""
    t = p.transfer
    if t is None:
        return dict.fromkeys(CSV_FIELDS)
    return {
        "transfer_mode": t.mode,
        "transfer_method": t.method,
        "input_bytes": t.input_bytes,
        "moved_bytes": t.moved_bytes,
        "sent_bytes": t.sent_bytes,
        "messages": t.messages,
        "returned_bytes": t.returned_bytes,
        "put_s": t.put_s,
        "put_share": t.put_share,
    }


CSV_FIELDS = (
    *("transfer_mode", "transfer_method", "input_bytes", "moved_bytes", "sent_bytes"),
    *("messages", "returned_bytes", "put_s", "put_share"),
)


def has_transfer(exp: Experiment) -> bool:
    return transfer_mode([p for s in exp.series for p in s.points]) is not None


def bytes_text(n: float) -> str:
    """Bytes in binary units, three significant figures: ``512 B``, ``3.05 MiB``, ``1.00 GiB``."""
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.{max(0, 2 - int(math.log10(max(abs(n), 1))))}f} {unit}"
    raise AssertionError("unreachable")


def seconds_text(s: float) -> str:
    """A short time: ``0.42 s``, ``3.1 ms``, ``25 us``."""
    if s >= 0.1:
        return f"{s:.2f} s"
    value, unit = (s * 1e3, "ms") if s >= 1e-4 else (s * 1e6, "us")
    return f"{value:.0f} {unit}" if value >= 10 else f"{value:.2g} {unit}"
