"""``array_means``: row means of a ``rows x cols`` array of uniform [0, 1) numbers.

Graph: ``chunks`` tasks each generate a band of rows and return their means; one reduce joins
the bands in order. The array itself never exists anywhere whole.

Oracle: statistically, the grand mean lies within :data:`Z_LIMIT` standard errors of 1/2 (a
uniform [0, 1) number has variance 1/12); exactly, the driver regenerates one sampled chunk and
its row means must match the returned ones bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from cluster_runner.devices import CPU, DEVICES
from cluster_runner.errors import JobSpecError
from cluster_runner.graph import Graph, Ref
from cluster_runner.workloads.arrays import row_means_chunk, sampled_chunk
from cluster_runner.workloads.base import (
    MAX_CHUNKS,
    Param,
    ResultSummary,
    Verification,
    Workload,
    digest,
    exact_note,
    recompute,
    split,
)

#: A correct result fails the statistical check with probability about 6e-7.
Z_LIMIT = 5.0


def means_chunk(seed: int, chunk: int, rows: int, cols: int, device: str = CPU) -> Any:
    """Task: the row means of chunk ``chunk`` (``rows`` rows), on ``device``."""
    return row_means_chunk(seed, chunk, rows, cols, device)


def join_means(*parts: np.ndarray) -> np.ndarray:
    """Reduce: all row means, in row order."""
    return np.concatenate(parts)


class ArrayMeans(Workload):
    name = "array_means"
    description = "row means of a rows x cols uniform random array, generated chunk by chunk"
    weak_param = "rows"
    params = (
        Param("rows", int, "rows of the array", minimum=1, maximum=10**10),
        Param("cols", int, "columns of the array", minimum=1, maximum=10**8),
        Param(
            "chunks",
            int,
            "number of chunk tasks (bands of rows)",
            default=16,
            minimum=1,
            maximum=MAX_CHUNKS,
        ),
        Param("seed", int, "seed of the random numbers", default=0, minimum=0, maximum=2**63 - 1),
        Param(
            "device", str, "where chunks are generated and reduced", default=CPU, choices=DEVICES
        ),
    )

    def check(self, params: Mapping[str, Any], where: str) -> None:
        if params["chunks"] > params["rows"]:
            raise JobSpecError(
                f"{where}: chunks ({params['chunks']}) must not exceed rows ({params['rows']})"
            )

    def result_bytes(self, params: Mapping[str, Any]) -> int | None:
        return params["rows"] * 8  # one float64 mean a row

    def build(self, graph: Graph, stage: str, params: Mapping[str, Any]) -> Ref:
        seed, cols, device = params["seed"], params["cols"], params["device"]
        pieces = [
            (seed, i, stop - start, cols, device)
            for i, (start, stop) in enumerate(split(params["rows"], params["chunks"]))
        ]
        parts = graph.starmap(
            f"{stage}/chunk", means_chunk, pieces, stage=stage, resources=self.resources(params)
        )
        return graph.add(f"{stage}/reduce", join_means, parts, stage=stage)

    def verify(self, params: Mapping[str, Any], value: Any) -> Verification:
        rows, cols, seed = params["rows"], params["cols"], params["seed"]
        if not isinstance(value, np.ndarray) or value.shape != (rows,):
            return Verification(False, f"expected {rows} row means, got {type(value).__name__}")
        grand = float(np.mean(value))
        z = (grand - 0.5) / math.sqrt(1 / (12 * rows * cols))
        i = sampled_chunk(seed, params["chunks"])
        start, stop = split(rows, params["chunks"])[i]
        recheck = recompute(params["device"], row_means_chunk, seed, i, stop - start, cols)
        exact = recheck is None or np.array_equal(value[start:stop], recheck)
        note = exact_note(params["device"], i, recheck)
        method = f"grand mean z = {z:+.2f} (|z| < {Z_LIMIT:g}); {note}"
        return Verification(bool(abs(z) < Z_LIMIT and exact), method, 0.5)

    def summarize(self, params: Mapping[str, Any], value: Any) -> ResultSummary:
        grand = float(np.mean(value))
        return ResultSummary(
            grand, f"mean of {len(value):,} row means = {grand:.6f}", digest(value)
        )


WORKLOAD = ArrayMeans()
