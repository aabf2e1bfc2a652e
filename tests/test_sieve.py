"""The prime-counting kernel against references that share none of its code or ideas.

References: a plain numpy sieve (:func:`base_primes`, small ranges), a numpy sieve of one
interval by its base primes (:func:`interval_count`, ranges up to 1e12), the Lucy Hedgehog
count and the known values of pi(10^k) (:mod:`cluster_runner.workloads.primes`).

Tiny segment and block sizes (a few bytes of 30 numbers) force every boundary the kernel has
(segment, L1 block, first and last byte, pre-sieve pattern offset) into small ranges.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster_runner.workloads.base import split
from cluster_runner.workloads.primes import KNOWN_PI, count_chunk, prime_count_oracle
from cluster_runner.workloads.sieve import (
    BLOCK_BYTES,
    PRESIEVED,
    base_primes,
    count_primes_between,
)

LIMIT = 12_000_000
PRIMES_TO_LIMIT = base_primes(LIMIT)
BASE = base_primes(math.isqrt(10**12 + 10**7) + 1)  # every prime a test below may need

#: (segment_bytes, block_bytes): defaults, tiny, uneven, and block larger than segment.
SIZES = [(0, 0), (8, 8), (16, 8), (24, 16), (64, 16), (128, 40), (512, 64), (96, 1000)]


def reference_count(lo: int, hi: int) -> int:
    """Primes in [lo, hi) for hi <= LIMIT, from a plain sieve."""
    lo, hi = max(lo, 0), max(hi, 0)
    return max(0, int(np.searchsorted(PRIMES_TO_LIMIT, hi) - np.searchsorted(PRIMES_TO_LIMIT, lo)))


def interval_count(lo: int, hi: int) -> int:
    """Primes in [lo, hi) by a numpy sieve of that interval alone (one flag per number)."""
    if hi <= lo:
        return 0
    composite = np.zeros(hi - lo, dtype=bool)
    for p in base_primes(math.isqrt(hi - 1)):
        start = max(p * p, -(-lo // p) * p)
        composite[start - lo :: p] = True
    composite[: max(0, 2 - lo)] = True  # 0 and 1
    return int(np.count_nonzero(~composite))


def kernel(lo: int, hi: int, segment: int = 0, block: int = 0) -> int:
    return count_primes_between(lo, hi, BASE, segment, block)


def test_references_agree():
    for lo, hi in [(0, 1000), (999_000, 1_001_000), (123_456, 1_999_999)]:
        assert interval_count(lo, hi) == reference_count(lo, hi)
    assert reference_count(0, 10**6 + 1) == prime_count_oracle(10**6) == KNOWN_PI[10**6]


def test_every_small_interval():
    """All 0 <= lo <= hi <= 250: the first bytes, 2, 3, 5, the pre-sieved primes, empty ranges."""
    for lo in range(251):
        for hi in range(lo, 251):
            assert kernel(lo, hi) == reference_count(lo, hi), (lo, hi)


@pytest.mark.parametrize("lo,hi", [(5, 5), (7, 7), (10, 3), (100, 0), (-5, 2), (-100, -1)])
def test_empty_and_reversed_ranges(lo, hi):
    assert kernel(lo, hi) == 0


@pytest.mark.parametrize("lo", [0, 1, 2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("hi", [2, 3, 4, 8, 29, 30, 31, 101, 102, 103, 104, 10_609, 10_610])
def test_low_edges(lo, hi):
    # 10_609 = 103^2: the first square of a prime that is sieved rather than pre-sieved.
    assert kernel(lo, hi) == reference_count(lo, hi)


@pytest.mark.parametrize("segment,block", SIZES)
def test_random_intervals_with_every_segment_size(segment, block):
    rng = np.random.default_rng(segment * 1000 + block)
    for _ in range(300):
        lo = int(rng.integers(0, LIMIT))
        width = int(
            rng.choice([rng.integers(0, 70), rng.integers(0, 5_000), rng.integers(0, 10**5)])
        )
        hi = min(lo + width, LIMIT)
        assert kernel(lo, hi, segment, block) == reference_count(lo, hi), (lo, hi)


@pytest.mark.parametrize("segment,block", [(0, 0), (8, 8), (64, 16), (200, 64)])
def test_bounds_at_segment_and_byte_boundaries(segment, block):
    """lo and hi a byte of 30 numbers, or a segment, or a block away, each side, odd and even."""
    seg = segment or 1 << 16
    blk = block or BLOCK_BYTES
    for start in (30 * seg * 3, 30 * blk * 7, 30 * 40_000, 1_234_560):
        for dlo in (-31, -30, -1, 0, 1, 2, 29, 30):
            for dhi in (-1, 0, 1, 30, 31, 30 * seg, 30 * seg + 1, 30 * blk - 1):
                lo, hi = start + dlo, start + 30 * seg + dhi
                if hi <= LIMIT:
                    assert kernel(lo, hi, segment, block) == reference_count(lo, hi), (lo, hi)


@settings(max_examples=200, deadline=None)
@given(
    lo=st.integers(0, LIMIT),
    width=st.integers(0, 20_000),
    size=st.sampled_from(SIZES),
)
def test_property_any_interval_any_segment_size(lo, width, size):
    hi = min(LIMIT, lo + width)
    assert kernel(lo, hi, *size) == reference_count(lo, hi)


@pytest.mark.parametrize("k", range(1, 10))
def test_powers_of_ten(k):
    n = 10**k
    assert kernel(0, n + 1) == KNOWN_PI[n]


@pytest.mark.parametrize("n,chunks", [(10**8, 7), (10**8, 64), (99_999_989, 13), (3_000_017, 100)])
def test_chunk_splits_add_up(n, chunks):
    """The workload's own split and task: chunks of [0, n] share the primes up to sqrt(n)."""
    primes = base_primes(math.isqrt(n))
    total = sum(count_chunk(lo, hi, primes) for lo, hi in split(n + 1, chunks))
    expected = KNOWN_PI[n] if n in KNOWN_PI else prime_count_oracle(n)
    assert total == expected


@pytest.mark.parametrize("p", [103, 107, 997, 1009, 31_607, 31_627])
def test_around_squares_of_primes_with_only_the_primes_needed(p):
    """The kernel must sieve with p exactly when p^2 < hi, given only the primes <= sqrt(hi)."""
    for hi in (p * p - 1, p * p, p * p + 1, p * p + 2):
        primes = base_primes(math.isqrt(hi))
        for lo in (max(0, p * p - 5_000_000), p * p - 60, p * p - 1, p * p):
            assert count_primes_between(lo, hi, primes) == interval_count(lo, hi), (lo, hi)


@pytest.mark.parametrize(
    "lo,width",
    [
        (10**10 - 3_000, 10**6),
        (2**32 - 10**5, 2 * 10**5),
        (10**11 + 7, 2 * 10**6),
        (10**12 - 10**6, 10**6 + 1),
    ],
)
def test_large_intervals(lo, width):
    """Far from 0: large primes that clear at most a bit or two per segment, big segments."""
    assert kernel(lo, lo + width) == interval_count(lo, lo + width)
    assert kernel(lo, lo + width, 4096, 512) == interval_count(lo, lo + width)


def test_presieved_primes_are_counted_back():
    assert PRESIEVED[0] == 7
    for p in PRESIEVED:
        p = int(p)
        assert kernel(p, p + 1) == 1
        assert kernel(p - 1, p) == 0


def test_matches_lucy_oracle_off_the_table():
    for n in (1_000_003, 12_345_678, 2**25 + 1):
        assert kernel(0, n + 1) == prime_count_oracle(n)
