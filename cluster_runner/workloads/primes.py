"""``primes``: count the primes <= n.

Graph: one task sieves the base primes up to sqrt(n); ``chunks`` tasks each count the primes in
their slice of ``[0, n]`` with the segmented sieve (:mod:`.sieve`), all depending on the base
task; one reduce adds the counts in chunk order.

Oracle: the known values of pi(10^k), and for any other n the Lucy Hedgehog recurrence
(:func:`prime_count_oracle`), an O(n^(3/4)) count that shares no code or idea with the sieve.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

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
from cluster_runner.workloads.sieve import base_primes, count_primes_between

#: pi(10^k) for k = 1..10: OEIS A006880.
KNOWN_PI = {
    10**1: 4,
    10**2: 25,
    10**3: 168,
    10**4: 1229,
    10**5: 9592,
    10**6: 78498,
    10**7: 664579,
    10**8: 5761455,
    10**9: 50847534,
    10**10: 455052511,
}

#: Largest n the runner accepts: the oracle still answers in about a second there.
MAX_N = 10**12


def count_chunk(lo: int, hi: int, primes: np.ndarray) -> int:
    """Task: the number of primes in ``[lo, hi)``."""
    return int(count_primes_between(lo, hi, primes))


def sum_counts(*counts: int) -> int:
    """Reduce: the total count (integers, so any order gives the same bits)."""
    return int(sum(counts))


def prime_count_oracle(n: int) -> int:
    """pi(n) by the Lucy Hedgehog recurrence, vectorised over the O(sqrt n) values floor(n/i).

    ``S(v)`` starts as the count of 2..v and, for each prime p <= sqrt(n), drops the numbers
    whose least prime factor is p: ``S(v) -= S(v // p) - S(p - 1)`` for every v >= p^2.
    ``small[v] = S(v)`` for v <= r and ``large[i] = S(n // i)`` for i <= r, r = isqrt(n).
    """
    if n < 2:
        return 0
    r = math.isqrt(n)
    small = np.arange(-1, r, dtype=np.int64)  # small[v] = v - 1
    small[0] = 0
    i = np.arange(1, r + 1, dtype=np.int64)
    large = np.zeros(r + 1, dtype=np.int64)
    large[1:] = n // i - 1
    for p in range(2, r + 1):
        if small[p] == small[p - 1]:
            continue  # p is not prime
        sp = small[p - 1]
        p2 = p * p
        # large[i] for i with n // i >= p^2, i.e. i <= n // p^2 (and i <= r)
        top = min(r, n // p2)
        idx = np.arange(1, top + 1, dtype=np.int64)
        ip = idx * p
        near = ip <= r
        inner = np.empty(top, dtype=np.int64)
        inner[near] = large[ip[near]]
        inner[~near] = small[n // ip[~near]]
        # Right-hand sides are read before any write: the vectorised update sees the values
        # from before this p, exactly as the sequential recurrence (v descending) does.
        large[1 : top + 1] -= inner - sp
        if p2 <= r:
            v = np.arange(r, p2 - 1, -1, dtype=np.int64)
            small[v] -= small[v // p] - sp
    return int(large[1])


def warm_up_sieve() -> None:
    """Warm-up hook: compile the sieve's numba kernels, or load them from numba's cache."""
    count_primes_between(0, 100, base_primes(10))


class Primes(Workload):
    name = "primes"
    description = "count the primes <= n with a segmented sieve"
    weak_param = "n"
    warm_up = (warm_up_sieve,)
    params = (
        Param("n", int, "count the primes <= n", minimum=2, maximum=MAX_N),
        Param("chunks", int, "number of chunk tasks", default=16, minimum=1, maximum=MAX_CHUNKS),
    )

    def check(self, params: Mapping[str, Any], where: str) -> None:
        from cluster_runner.errors import JobSpecError

        if params["chunks"] > params["n"]:
            raise JobSpecError(
                f"{where}: chunks ({params['chunks']}) must not exceed n ({params['n']})"
            )

    def build(self, graph: Graph, stage: str, params: Mapping[str, Any]) -> Ref:
        n = params["n"]
        base = graph.add(f"{stage}/base", base_primes, math.isqrt(n), stage=stage)
        pieces = split(n + 1, params["chunks"])
        counts = graph.starmap(f"{stage}/chunk", count_chunk, pieces, shared=(base,), stage=stage)
        return graph.add(f"{stage}/reduce", sum_counts, counts, stage=stage)

    def verify(self, params: Mapping[str, Any], value: Any) -> Verification:
        n = params["n"]
        if n in KNOWN_PI:
            return Verification(value == KNOWN_PI[n], "known value of pi(10^k)", KNOWN_PI[n])
        expected = prime_count_oracle(n)
        return Verification(value == expected, "Lucy Hedgehog prime count", expected)

    def summarize(self, params: Mapping[str, Any], value: Any) -> ResultSummary:
        return ResultSummary(int(value), f"pi({params['n']:,}) = {value:,}", digest(int(value)))


WORKLOAD = Primes()
