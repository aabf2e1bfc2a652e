"""The prime-counting chunk kernel: a segmented sieve of Eratosthenes over odd numbers.

Compiled with numba (``cache=True``: the first process compiles and writes the machine code
next to this module or in numba's cache dir; every later worker process loads it in
milliseconds instead of compiling again). ``nogil=True`` lets the ``threads`` backend run
several chunks truly in parallel.

The sieve keeps one byte per odd number and works through ``[lo, hi)`` one segment at a time, a
segment small enough to stay in the core's L2 cache. For every base prime it remembers where
its next multiple falls, so each segment costs one pass per prime that reaches it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Odd numbers per segment: 128 KiB of bytes, which fits the L2 cache of any current core.
SEGMENT_ODDS = 1 << 17


def base_primes(limit: int) -> np.ndarray:
    """All primes <= ``limit`` as int64, by a plain numpy sieve (limit is at most ~1e6)."""
    if limit < 2:
        return np.empty(0, dtype=np.int64)
    is_prime = np.ones(limit + 1, dtype=bool)
    is_prime[:2] = False
    for p in range(2, math.isqrt(limit) + 1):
        if is_prime[p]:
            is_prime[p * p :: p] = False
    return np.flatnonzero(is_prime).astype(np.int64)


@njit(cache=True, nogil=True)
def count_primes_between(lo: int, hi: int, primes: np.ndarray) -> int:  # pragma: no cover - jit
    """Count the primes p with ``lo <= p < hi``; ``primes`` must hold every prime <= sqrt(hi)."""
    count = 0
    if lo <= 2 < hi:
        count += 1
    start = max(lo, 3)
    if start % 2 == 0:
        start += 1
    if start >= hi:
        return count

    # Odd base primes whose square is below hi, and the index of each one's next odd multiple
    # (index j stands for the number start + 2 j).
    n_base = 0
    for i in range(primes.shape[0]):
        p = primes[i]
        if p == 2:
            continue
        if p * p >= hi:
            break
        n_base += 1
    odd_primes = np.empty(n_base, dtype=np.int64)
    next_index = np.empty(n_base, dtype=np.int64)
    k = 0
    for i in range(primes.shape[0]):
        p = primes[i]
        if p == 2:
            continue
        if k == n_base:
            break
        m = max(p * p, ((start + p - 1) // p) * p)
        if m % 2 == 0:
            m += p
        odd_primes[k] = p
        next_index[k] = (m - start) // 2
        k += 1

    segment = np.empty(SEGMENT_ODDS, dtype=np.uint8)
    seg_lo = start
    while seg_lo < hi:
        length = min(SEGMENT_ODDS, (hi - seg_lo + 1) // 2)
        segment[:length] = 1
        seg_hi = seg_lo + 2 * length
        base = (seg_lo - start) // 2
        for k in range(n_base):
            p = odd_primes[k]
            if p * p >= seg_hi:
                break  # primes are sorted: no later one reaches this segment either
            j = next_index[k] - base
            while j < length:
                segment[j] = 0
                j += p
            next_index[k] = j + base
        for j in range(length):
            count += segment[j]
        seg_lo = seg_hi
    return count
