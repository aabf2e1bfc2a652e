"""``dot``: the dot product of two length-n vectors of uniform [0, 1) numbers.

Graph: ``chunks`` tasks each generate their slices of both vectors and return the partial dot;
one reduce sums the partials (``math.fsum``: correctly rounded, hence independent of order) and
keeps them for verification.

Oracle: statistically, with x, y independent uniform [0, 1), E[xy] = 1/4 and Var[xy] = 7/144,
so the dot lies within :data:`Z_LIMIT` standard errors of n/4; exactly, the driver regenerates
one sampled chunk and its partial dot must match the returned one bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from cluster_runner.devices import CPU, DEVICES
from cluster_runner.errors import JobSpecError
from cluster_runner.graph import Graph, Ref
from cluster_runner.workloads.arrays import dot_chunk, sampled_chunk
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


def partial_dot(seed: int, chunk: int, length: int, device: str = CPU) -> Any:
    """Task: the partial dot product of chunk ``chunk`` (``length`` elements), on ``device``."""
    return dot_chunk(seed, chunk, length, device)


def sum_partials(*partials: float) -> tuple[float, np.ndarray]:
    """Reduce: the dot product and the partials it was summed from."""
    return math.fsum(partials), np.array(partials, dtype=np.float64)


class Dot(Workload):
    name = "dot"
    description = "dot product of two length-n uniform random vectors, in chunks"
    weak_param = "n"
    params = (
        Param("n", int, "length of each vector", minimum=1, maximum=10**12),
        Param("chunks", int, "number of chunk tasks", default=16, minimum=1, maximum=MAX_CHUNKS),
        Param("seed", int, "seed of the random numbers", default=0, minimum=0, maximum=2**63 - 1),
        Param(
            "device", str, "where chunks are generated and reduced", default=CPU, choices=DEVICES
        ),
    )

    def check(self, params: Mapping[str, Any], where: str) -> None:
        if params["chunks"] > params["n"]:
            raise JobSpecError(
                f"{where}: chunks ({params['chunks']}) must not exceed n ({params['n']})"
            )

    def build(self, graph: Graph, stage: str, params: Mapping[str, Any]) -> Ref:
        seed, device = params["seed"], params["device"]
        pieces = [
            (seed, i, stop - start, device)
            for i, (start, stop) in enumerate(split(params["n"], params["chunks"]))
        ]
        parts = graph.starmap(
            f"{stage}/chunk", partial_dot, pieces, stage=stage, resources=self.resources(params)
        )
        return graph.add(f"{stage}/reduce", sum_partials, parts, stage=stage)

    def verify(self, params: Mapping[str, Any], value: Any) -> Verification:
        n, seed, chunks = params["n"], params["seed"], params["chunks"]
        total, partials = value
        z = (total - n / 4) / math.sqrt(n * 7 / 144)
        i = sampled_chunk(seed, chunks)
        start, stop = split(n, chunks)[i]
        recheck = recompute(params["device"], dot_chunk, seed, i, stop - start)
        exact = recheck is None or partials[i] == recheck
        summed = total == math.fsum(partials)
        method = f"z = {z:+.2f} (|z| < {Z_LIMIT:g}); {exact_note(params['device'], i, recheck)}"
        return Verification(bool(abs(z) < Z_LIMIT and exact and summed), method, n / 4)

    def summarize(self, params: Mapping[str, Any], value: Any) -> ResultSummary:
        total = float(value[0])
        return ResultSummary(total, f"x.y = {total:.6e}", digest(value))


WORKLOAD = Dot()
