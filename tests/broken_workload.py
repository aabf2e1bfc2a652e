"""A primes workload whose reduce is off by one: proves a wrong answer is caught and exits 1."""

from __future__ import annotations

from cluster_runner.workloads.primes import Primes, sum_counts


def sum_counts_off_by_one(*counts: int) -> int:
    return sum_counts(*counts) + 1


class OffByOne(Primes):
    name = "off_by_one"

    def build(self, graph, stage, params):
        ref = super().build(graph, stage, params)
        return graph.add(f"{stage}/wrong", sum_counts_off_by_one, ref, stage=stage)


WORKLOAD = OffByOne()
