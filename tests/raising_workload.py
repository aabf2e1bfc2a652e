"""A primes workload whose last task raises ``ValueError``: a bug in a workload, as a user's.

Its task functions live in this module (imported by name on every worker, as the runner's own
workloads are), so that the worker's traceback names :func:`explode`, the frame that raised.
"""

from __future__ import annotations

from cluster_runner.workloads.primes import Primes

#: What the task raises; the tests look for it in the worker's traceback.
MESSAGE = "the workload's own bug: 7 is not a valid count"


def explode(*counts: int) -> int:
    raise ValueError(MESSAGE)


class Raising(Primes):
    name = "raising"

    def build(self, graph, stage, params):
        ref = super().build(graph, stage, params)
        return graph.add(f"{stage}/explode", explode, ref, stage=stage)


WORKLOAD = Raising()
