"""``driver_rows``: row means of a float64 array the driver makes and hands to every chunk task.

Every other built-in workload draws its numbers inside its tasks, so no input byte ever leaves
the driver. This one starts where a user's code usually starts, from data the driver holds
(issue 21): a ``rows x cols`` array of about ``size_mb`` MiB of uniform [0, 1) numbers
(``numpy.random.default_rng(seed)``), made once in the driver and declared with
:meth:`~cluster_runner.graph.Graph.put`. Its chunk tasks each get the whole array (in their
``shared`` arguments) and return the means of their band of rows; one reduce joins the bands in
order. How the array reaches the workers is the backend's business and is what a sweep of this
workload measures: shared memory on ``local``, one ``ray.put`` on Ray, one scatter on Dask, a
reference on ``serial``/``threads``; ``--transfer copy`` sends it inside every task's message.

The array is cached in the driver (:func:`driver_array`), one at a time, so that the runs of a
job and the check after each do not make it again; a new size or seed drops the old array
before making the new one, so the driver never holds two.

Oracle: the driver's own ``array.mean(axis=1)`` over the whole array, compared bit for bit.
This is exact, not approximate, because numpy reduces each row of a C-contiguous array on its
own (pairwise summation along the row, then one division), whatever rows surround it: the mean
of a row is the same bits in a band of one row, of many, or in the whole array, and whether the
array is the driver's, a read-only view of shared memory, a Ray zero-copy view or a fresh copy
(alignment does not enter). ``tests/test_workloads.py`` checks this for many shapes and chunk
counts; were it ever to fail (another numpy), the check would need a tolerance, not this oracle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cluster_runner.errors import JobSpecError
from cluster_runner.graph import Graph, Ref
from cluster_runner.workloads.base import (
    MAX_CHUNKS,
    Param,
    ResultSummary,
    Verification,
    Workload,
    digest,
    split,
)

#: Bytes in the ``size_mb`` unit (MiB: ``size_mb = 1024`` with 1024 columns is 1 GiB exactly).
MB = 2**20
#: Largest array asked for, in MiB (about 1 TB); the driver's available memory bounds it first.
MAX_SIZE_MB = 1_000_000
#: Copies of the array the driver needs room for: its own, and one placed for the workers
#: (a shared-memory segment, Ray's object store, a pickled message) on the same machine.
DRIVER_COPIES = 2

#: The one array the driver holds: ``((size_mb, cols, seed), array)``, or None.
_held: tuple[tuple[int, int, int], np.ndarray] | None = None


def rows_of(size_mb: int, cols: int) -> int:
    """Rows of the array: as many rows of ``cols`` float64 numbers as ``size_mb`` MiB holds."""
    return size_mb * MB // (8 * cols)


def driver_array(size_mb: int, cols: int, seed: int) -> np.ndarray:
    """The array of these parameters, made in the driver once and kept (read-only) until
    another is asked for; the old one is dropped first, so at most one is ever held."""
    global _held
    key = (size_mb, cols, seed)
    if _held is None or _held[0] != key:
        _held = None
        array = np.random.default_rng(seed).random((rows_of(size_mb, cols), cols))
        array.flags.writeable = False  # the oracle reads it after the runs: nobody may write
        _held = (key, array)
    return _held[1]


def band_means(start: int, stop: int, array: np.ndarray) -> np.ndarray:
    """Task: the means of rows ``start`` to ``stop`` of the driver's array (a view of it)."""
    return array[start:stop].mean(axis=1)


def join_means(*parts: np.ndarray) -> np.ndarray:
    """Reduce: all row means, in row order."""
    return np.concatenate(parts)


class DriverRows(Workload):
    name = "driver_rows"
    description = (
        "row means of a size_mb MiB array made in the driver and given to every chunk task"
    )
    weak_param = "size_mb"
    params = (
        Param(
            "size_mb",
            int,
            "MiB of float64 numbers the driver makes and sends",
            default=64,
            minimum=1,
            maximum=MAX_SIZE_MB,
        ),
        Param("cols", int, "columns of the array", default=1024, minimum=1, maximum=10**8),
        Param(
            "chunks",
            int,
            "number of chunk tasks (bands of rows)",
            default=64,
            minimum=1,
            maximum=MAX_CHUNKS,
        ),
        Param("seed", int, "seed of the random numbers", default=0, minimum=0, maximum=2**63 - 1),
    )

    def check(self, params: Mapping[str, Any], where: str) -> None:
        size_mb, cols, chunks = params["size_mb"], params["cols"], params["chunks"]
        rows = rows_of(size_mb, cols)
        if rows < 1:
            raise JobSpecError(
                f"{where}: one row of {cols:,} columns takes {cols * 8 / MB:.3g} MiB, more than"
                f" size_mb ({size_mb}): use fewer cols or a larger size_mb"
            )
        if chunks > rows:
            raise JobSpecError(
                f"{where}: chunks ({chunks}) must not exceed the array's rows ({rows:,} rows of"
                f" {cols:,} columns in {size_mb} MiB)"
            )
        self._check_memory(size_mb, where)

    @staticmethod
    def _check_memory(size_mb: int, where: str) -> None:
        """Refuse an array the driver could not hold, before it is made: filling it would get
        the driver killed by the kernel's OOM killer, with no message."""
        from cluster_runner.limits import Machine, gib

        machine = Machine.here()
        needed = size_mb * MB * DRIVER_COPIES
        if needed > machine.available_bytes:
            raise JobSpecError(
                f"{where}: size_mb = {size_mb} makes a {gib(size_mb * MB)} array in the driver,"
                f" which needs room for it {DRIVER_COPIES} times (its own and the one placed for"
                f" the workers: {gib(needed)}); this machine has {gib(machine.available_bytes)}"
                " available: use a smaller size_mb"
            )

    def result_bytes(self, params: Mapping[str, Any]) -> int | None:
        return rows_of(params["size_mb"], params["cols"]) * 8  # one float64 mean a row

    def build(self, graph: Graph, stage: str, params: Mapping[str, Any]) -> Ref:
        array = driver_array(params["size_mb"], params["cols"], params["seed"])
        data = graph.put(f"{stage}/array", array, stage=stage)
        bands = split(len(array), params["chunks"])
        parts = graph.starmap(f"{stage}/chunk", band_means, bands, stage=stage, shared=(data,))
        return graph.add(f"{stage}/reduce", join_means, parts, stage=stage)

    def verify(self, params: Mapping[str, Any], value: Any) -> Verification:
        rows = rows_of(params["size_mb"], params["cols"])
        if not isinstance(value, np.ndarray) or value.shape != (rows,):
            shown = getattr(value, "shape", type(value).__name__)
            return Verification(False, f"expected {rows:,} row means, got {shown}")
        expected = driver_array(params["size_mb"], params["cols"], params["seed"]).mean(axis=1)
        method = "bit for bit equal to the driver's own mean(axis=1) of the whole array"
        differ = int(np.count_nonzero(value != expected))
        if differ:
            method += f": {differ:,} of {rows:,} row means differ"
        return Verification(differ == 0, method, float(expected.mean()))

    def summarize(self, params: Mapping[str, Any], value: Any) -> ResultSummary:
        grand = float(np.mean(value))
        return ResultSummary(
            grand, f"mean of {len(value):,} row means = {grand:.6f}", digest(value)
        )


WORKLOAD = DriverRows()
