"""``noop``: tasks that do nothing, to measure what the runner and the engine cost per task.

Graph: ``tasks`` tasks each return their own index (one map over ``range(tasks)``, which costs
the graph nothing per task); one reduce adds them up, in index order. The work is nil, so the
wall time is all overhead: submission, scheduling, transfer, result handling.

Oracle: the sum of 0..tasks-1 is ``tasks * (tasks - 1) / 2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cluster_runner.graph import Graph, Ref
from cluster_runner.workloads.base import (
    MAX_CHUNKS,
    Param,
    ResultSummary,
    Verification,
    Workload,
    digest,
)


def nothing(index: int) -> int:
    """Task: no work at all; returns its index so the reduce can prove every task ran."""
    return index


def total(*indices: int) -> int:
    """Reduce: the sum of the indices."""
    return sum(indices)


class Noop(Workload):
    name = "noop"
    description = "tasks that do nothing: the runner's and the engine's cost per task"
    weak_param = "tasks"
    params = (Param("tasks", int, "number of no-op tasks", minimum=1, maximum=MAX_CHUNKS),)

    def build(self, graph: Graph, stage: str, params: Mapping[str, Any]) -> Ref:
        parts = graph.map(f"{stage}/task", nothing, range(params["tasks"]), stage=stage, digits=7)
        return graph.add(f"{stage}/reduce", total, parts, stage=stage)

    def verify(self, params: Mapping[str, Any], value: Any) -> Verification:
        n = params["tasks"]
        expected = n * (n - 1) // 2
        return Verification(value == expected, "sum of the task indices", expected)

    def summarize(self, params: Mapping[str, Any], value: Any) -> ResultSummary:
        return ResultSummary(int(value), f"{params['tasks']:,} tasks ran", digest(int(value)))


WORKLOAD = Noop()
