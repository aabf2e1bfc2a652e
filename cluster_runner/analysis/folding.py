"""Records folded into points as they are read: what a report keeps of 100,000 runs.

Issue 16: ``runner report`` over 10,000 runs took 1.1 GB and over 40,000 was killed at 6 GiB,
because every record was read and kept before anything was computed. Here records stream:
:class:`Fold` takes them one at a time, checks that they are one experiment as they come
(:class:`~.identity.OneExperiment`), and folds each into its point's :class:`PointRuns`, which
keeps the point's first record and, per run, only the numbers the statistics need (its time,
its cold flag, CPU seconds, peak memory, time in tasks, task count: about 60 bytes, in
arrays), never the record; a point whose runs had driver inputs (issue 21) keeps five numbers
more a run, of what moved (:class:`.transfer.TransferRuns`). :mod:`.aggregate` computes the
figures from them.

Reading and checking a record costs about 100 us of Python (parse, the schema's checks, the
typed record), so a big results file is folded in parallel (:func:`fold_files`): cut into byte
ranges at line ends, each range folded in a worker process, and the folds merged in file order,
which gives the runs in the order they were written, as one fold would. Anything out of the
ordinary (a malformed line, a truncated last line, records of two experiments) sends the file
back to the one sequential reader, so every error and warning reads exactly as it always did.
This module imports neither numpy nor scipy, so the workers start in a fraction of a second.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import math
import multiprocessing
import os
import warnings
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

from cluster_runner.analysis.identity import OneExperiment, PointLabels, labels_of
from cluster_runner.analysis.transfer import TransferRuns, run_transfer
from cluster_runner.analysis.variants import variant_of, with_variant
from cluster_runner.errors import RunnerError
from cluster_runner.results import RunRecord, read_records, results_files
from cluster_runner.results.store import record_of

#: Files smaller than this are read in this process (starting workers costs more).
PARALLEL_BYTES = 32 * 2**20
#: Ranges a big file is cut into, per worker: a worker that other processes slow down takes
#: fewer of them, and the others more (on a shared machine, one range a worker waits for the
#: slowest).
RANGES_PER_WORKER = 4
#: Bytes a worker reads at a time, whole lines, within its range.
BLOCK_BYTES = 4 * 2**20


class PointRuns:
    """One point's runs as they stream by: its first record, counts and reasons for the runs
    that do not count, and per verified run only the numbers the statistics need."""

    def __init__(self, first: RunRecord) -> None:
        self.first = first
        self.total = 0
        self.problems: dict[str, None] = {}
        self.startups: list[float] = []
        self.warmups: list[float] = []
        self.load: float | None = None
        self.walls = array("d")  # verified runs, in the order they ran
        self.cold = bytearray()
        self.cpu_s = array("d")  # nan: no usage recorded
        self.peaks = array("q")  # -1: no usage recorded
        self.busy = array("d")
        self.tasks = array("q")
        self.driver_only = bytearray()
        self.transfer: TransferRuns | None = None  # made at the first run with driver inputs

    def add(self, record: RunRecord) -> None:
        self.total += 1
        backend = record.backend
        if backend.startup_s is not None:
            self.startups.append(backend.startup_s)
        if backend.warmup_s is not None:
            self.warmups.append(backend.warmup_s)
        load = record.labels.other_load if record.labels is not None else None
        if load is not None:
            self.load = load if self.load is None else max(self.load, load)
        if record.status != "verified":
            self.problems[problem(record)] = None
            return
        usage = record.usage
        moved = run_transfer(record)
        if moved is not None and self.transfer is None:
            self.transfer = TransferRuns(*moved[:3], before=len(self.walls))
        if self.transfer is not None:
            self.transfer.add(moved[3] if moved is not None else None)
        self.walls.append(record.wall_s)  # type: ignore[arg-type]
        self.cold.append(maybe_cold(record))
        self.cpu_s.append(usage.cpu_s if usage is not None else math.nan)
        self.peaks.append(usage.peak_rss_bytes if usage is not None else -1)
        self.busy.append(sum(s.placement.busy_s for s in record.stages))
        self.tasks.append(sum(s.tasks for s in record.stages))
        scope = usage.scope if usage is not None else None
        self.driver_only.append(bool(scope) and scope.startswith("driver only"))  # type: ignore[union-attr]

    def extend(self, later: PointRuns) -> None:
        """Append the runs of ``later``, folded from the records that came after these."""
        self.total += later.total
        self.problems.update(later.problems)
        self.startups += later.startups
        self.warmups += later.warmups
        if later.load is not None:
            self.load = later.load if self.load is None else max(self.load, later.load)
        if later.transfer is not None and self.transfer is None:
            first = later.transfer
            self.transfer = TransferRuns(first.mode, first.method, first.input_bytes, 0)
            self.transfer.pad(len(self.walls))
        if self.transfer is not None:
            if later.transfer is not None:
                self.transfer.extend(later.transfer)
            else:
                self.transfer.pad(len(later.walls))
        for name in ("walls", "cold", "cpu_s", "peaks", "busy", "tasks", "driver_only"):
            getattr(self, name).extend(getattr(later, name))


class Fold:
    """Records folded into points (see the module docstring). Refuses, at once, a record of
    another experiment than the first's."""

    def __init__(self) -> None:
        self.check = OneExperiment()
        self.files: dict[str, None] = {}
        self.sweep_baselines: dict[str | None, None] = {}
        self.points: dict[tuple, PointRuns] = {}

    def add(self, source: str, record: RunRecord) -> None:
        """Fold one record in (a warm-up only into the experiment's identity and files)."""
        labels = labels_of(record)
        self.check.add(source, record, labels)
        self.files[source] = None
        self.sweep_baselines[labels.baseline] = None
        if record.warmup:
            return
        key = point_key(record, labels)
        runs = self.points.get(key)
        if runs is None:
            runs = self.points[key] = PointRuns(record)
        runs.add(record)

    def extend(self, later: Fold) -> None:
        """Append ``later``'s fold, of the records that came after; raises
        :class:`~cluster_runner.errors.MixedResultsError` if they are another experiment."""
        if later.check.first is None:
            return
        self.check.add(*later.check.first)
        for backend, (source, address) in later.check.clusters.items():
            self.check.add_cluster(backend, source, address)
        if later.check.transfer is not None:
            self.check.add_transfer(*later.check.transfer)
        self.files.update(later.files)
        self.sweep_baselines.update(later.sweep_baselines)
        for key, runs in later.points.items():
            if key in self.points:
                self.points[key].extend(runs)
            else:
                self.points[key] = runs


def series_name(record: RunRecord) -> str:
    """The line a record belongs to: its backend, ``/gpu`` for runs on GPUs, and its ``--vary``
    values (``local n=1e9``, see :mod:`.variants`)."""
    series = record.backend.name + ("/gpu" if labels_of(record).device == "gpu" else "")
    return with_variant(series, variant_of(record))


def point_key(record: RunRecord, labels: PointLabels) -> tuple:
    """The point a record belongs to: its series, size and chunk count (``labels``: its own)."""
    series = record.backend.name + ("/gpu" if labels.device == "gpu" else "")
    return (with_variant(series, variant_of(record)), labels.size, labels.chunks)


def maybe_cold(record: RunRecord) -> bool:
    """Whether a run was the first on a fresh backend: recorded ``cold``, or, in a record
    written before that flag, a ``submit`` run numbered 0 that is not a warm-up (``submit``
    starts a backend per command and numbers warm-ups first)."""
    return record.cold or (record.labels is None and record.repeat == 0 and not record.warmup)


def problem(record: RunRecord) -> str:
    """Why a run does not count, in a few words: its error, or the result that was wrong."""
    if record.status != "unverified" or record.error:
        return f"{record.status}: {record.error or 'no reason given'}"
    wrong = [
        f"{s.name} gave {s.result.result!r}, expected {s.result.expected!r}"
        f" ({s.result.verification or None})"
        for s in record.stages
        if not s.result.verified
    ]
    return "unverified: " + "; ".join(wrong)


# --- reading ---------------------------------------------------------------------------------


def fold_files(paths: Iterable[str | Path], workers: int | None = None) -> Fold:
    """The fold of every record of ``paths`` (files, or folders of ``*.jsonl``), in order.

    A file of at least :data:`PARALLEL_BYTES` is folded by ``workers`` processes (default: the
    CPUs this process may use) when there are two or more; see the module docstring.
    """
    files = list(results_files(paths))
    cpus = workers or _cpus()
    big = [p for p in files if cpus > 1 and _size(p) >= PARALLEL_BYTES]
    if big:
        folded = _fold_in_parallel(files, set(big), cpus)
        if folded is not None:
            return folded
    return _fold_sequentially(files)


def _fold_sequentially(files: list[Path]) -> Fold:
    folded = Fold()
    with _no_cyclic_gc():
        for path in files:
            for record in read_records([path], timelines=False):
                folded.add(str(path), record)
    return folded


def _fold_in_parallel(files: list[Path], big: set[Path], cpus: int) -> Fold | None:
    """The fold of ``files``, the ``big`` ones in ranges by worker processes; None when any
    range met anything but plain records (the caller then reads sequentially, for the exact
    words of the error or warning)."""
    pieces = RANGES_PER_WORKER * cpus
    ranges = [(path, start, end) for path in files for start, end in _ranges(path, big, pieces)]
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with cf.ProcessPoolExecutor(min(cpus, len(ranges)), mp_context=context) as pool:
        futures = [pool.submit(fold_range, str(path), start, end) for path, start, end in ranges]
        parts = [future.result() for future in futures]
    if any(part is None for part in parts):
        return None
    folded = Fold()
    try:
        for part in parts:
            folded.extend(part)  # type: ignore[arg-type]
    except RunnerError:
        return None
    return folded


def _ranges(path: Path, big: set[Path], pieces: int) -> list[tuple[int, int | None]]:
    """``path`` cut into ``pieces`` byte ranges that start at line starts (one if not big)."""
    if path not in big:
        return [(0, None)]
    size = _size(path)
    starts = [0]
    with open(path, "rb") as file:
        for k in range(1, pieces):
            file.seek(max(starts[-1], size * k // pieces))
            file.readline()  # to the start of the next line
            if file.tell() < size and file.tell() > starts[-1]:
                starts.append(file.tell())
    ends: list[int | None] = [*starts[1:], None]
    return list(zip(starts, ends, strict=True))


def fold_range(path: str, start: int, end: int | None) -> Fold | None:
    """In a worker: the fold of the records in bytes ``[start, end)`` of ``path`` (whole lines;
    ``end`` None: to the end), or None if any line was not a plain record of one experiment.
    """
    folded = Fold()
    try:
        with _no_cyclic_gc(), warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning too sends the file to the sequential reader
            for line in _lines_in(path, start, end):
                if line.strip():
                    folded.add(path, record_of(line, path, timelines=False))
    except (RunnerError, Warning, UnicodeDecodeError, OSError):
        return None
    return folded


def _lines_in(path: str, start: int, end: int | None) -> Iterator[str]:
    """The lines of bytes ``[start, end)`` of ``path``, ended as ``str.splitlines`` ends them."""
    with open(path, "rb") as file:
        file.seek(start)
        left = math.inf if end is None else end - start
        carry = b""
        while left > 0:
            block = file.read(int(min(BLOCK_BYTES, left)))
            if not block:
                break
            left -= len(block)
            cut = block.rfind(b"\n") + 1
            whole, carry = carry + block[:cut], block[cut:]
            if not cut:
                carry = whole + carry
                continue
            yield from whole.decode("utf-8").splitlines()
        if carry:
            yield from carry.decode("utf-8").splitlines()


def _cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class _no_cyclic_gc:
    """Records hold no reference cycles, so reference counting frees each as the next is read;
    the cyclic collector would only walk the young ones again and again (10% of the time)."""

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was:
            gc.enable()
