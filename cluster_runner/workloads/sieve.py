"""The prime-counting chunk kernel: a segmented, bit-packed, mod-30 wheel sieve of Eratosthenes.

Compiled with numba (``cache=True``: the first process compiles, in about 2 s, and writes the
machine code to numba's cache, a per-user folder that :func:`cluster_runner.paths.use_kernel_cache`
names for every process; every later process only loads it, in a few tenths of a second).
``nogil=True`` lets the ``threads`` backend run several chunks truly in parallel. The code is
split into few functions on purpose: numba compiles each one apart and then again into every
caller, so helpers cost compile time (and IR inlining, tried, cost more).

Why it looks the way it does (issue 7: pi(1e9) on one core went from 0.64 s to about 0.07 s,
level with the C++ ``primesieve``; ``scripts/bench_kernels.py`` measures both side by side):

- **Mod-30 wheel, one bit per candidate.** Above 5 a prime is 1, 7, 11, 13, 17, 19, 23 or 29
  mod 30, so one byte holds the 8 candidates among 30 numbers: 15 times less memory than a
  byte per odd number, and 40 % of its crossings-off (to 1e9: 4.0e8 against 1.0e9).
- **Eight progressions per prime, each with a fixed bit.** For a sieving prime p the multiples
  p*q with q coprime to 30 fall into 8 residue classes mod 30; within a class consecutive
  multiples are exactly p bytes apart and always clear the same bit. A prime's state is the next
  byte of each class (slot b clears bit b), and the inner loop clears all 8 in one pass with
  constant masks, then advances by p. The 8 slots always lie within p bytes of each other, so
  one branch-free step per slot finishes a segment: one mispredicted branch per prime per
  segment instead of eight.
- **Pre-sieving.** The primes 7..101 are not sieved at all: the bits they clear repeat with
  period 7*11*13 bytes, 17*19 bytes, ..., so each segment starts as the AND of a few patterns
  built once per call, a vectorized pass each. That halves the remaining crossings-off (to 1e9:
  2.0e8, a fifth of the byte-per-odd sieve's).
- **Two cache levels.** The small primes, which cross off most often, work through a segment in
  L1-sized blocks; the others sweep the whole segment, which stays in L2. The segment grows
  with sqrt(hi) (64 KiB to 1 MiB) so that even the largest prime clears bits many times per
  segment: otherwise its per-segment bookkeeping, not the sieving, dominates beyond 1e10.
- **Counting** is a hardware popcount over 64-bit words, after masking the bits outside
  ``[lo, hi)`` in the first and last byte.

:func:`count_primes_between` is the task kernel; its optional segment and block sizes let tests
force every boundary case with tiny segments.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from cluster_runner.paths import use_kernel_cache

# One per-user cache folder for the driver and every worker it starts (issue 17: an installed
# package compiled the sieve again in processes that could not write beside the source).
# Before the decorators below: numba picks a function's cache folder when it is decorated.
use_kernel_cache()

#: The residues mod 30 that a prime above 5 can have; bit b of a byte stands for RESIDUES[b].
RESIDUES = np.array([1, 7, 11, 13, 17, 19, 23, 29], dtype=np.int64)
#: Bit of each residue mod 30, -1 for residues that share a factor with 30.
BIT_OF = np.full(30, -1, dtype=np.int64)
BIT_OF[RESIDUES] = np.arange(8)
#: Distance from q to the next number coprime to 30 (0 when q is coprime to 30).
TO_COPRIME = np.array(
    [next(d for d in range(7) if math.gcd(q + d, 30) == 1) for q in range(30)], dtype=np.int64
)


def _slot_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the 8 first multiples of a prime fall, from residues alone (see _sieving_primes).

    For a prime p = 30 c + RESIDUES[a] and a multiple m = p q with q = RESIDUES[w] mod 30, the
    j-th multiple after it is p (q + step), step = STEP[i] (i = 64 a + 8 w + j); it lies in bit
    BIT[i] of byte m // 30 + c * step + CARRY[i]. Tables, because the divisions by 30 they
    replace doubled the set-up of a chunk, which a 64-chunk job pays 64 times.
    """
    step, bit, carry = (np.zeros(512, dtype=np.int64) for _ in range(3))
    for a in range(8):
        for w in range(8):
            for j in range(8):
                i = 64 * a + 8 * w + j
                step[i] = (RESIDUES[(w + j) % 8] - RESIDUES[w]) % 30
                rest = (RESIDUES[a] * RESIDUES[w]) % 30 + RESIDUES[a] * step[i]
                bit[i], carry[i] = BIT_OF[rest % 30], rest // 30
    return step, bit, carry


STEP, BIT, CARRY = _slot_tables()

#: Primes removed by ANDing precomputed patterns; each group's period (in bytes) is its product.
#: Small groups keep the patterns cheap to build for every chunk (at most 10 KiB each).
PRESIEVE_GROUPS = (
    (7, 11, 13),
    (17, 19),
    (23, 29),
    (31, 37),
    (41, 43),
    (47, 53),
    (59, 61),
    (67, 71),
    (73, 79),
    (83, 89),
    (97, 101),
)
PRESIEVED = np.array([p for group in PRESIEVE_GROUPS for p in group], dtype=np.int64)
GROUP_ENDS = np.cumsum([len(group) for group in PRESIEVE_GROUPS]).astype(np.int64)

#: Bytes each pattern runs on past its period: a segment is pre-sieved in pieces this long.
PATTERN_REACH = 1 << 13
#: L1-sized block (bytes, 30 numbers each) in which the small primes cross off.
BLOCK_BYTES = 1 << 15
#: Bounds of the segment (bytes). It holds a few blocks and stays well inside a core's L2.
MIN_SEGMENT_BYTES = 1 << 16
MAX_SEGMENT_BYTES = 1 << 20
#: Primes below BLOCK_BYTES // SMALL_DIVISOR cross off per block, the others per segment.
SMALL_DIVISOR = 4


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


@intrinsic
def _popcount(typingctx, x):  # pragma: no cover - compiled
    """The CPU's popcount instruction (numba exposes none; LLVM's ``ctpop`` intrinsic)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@njit(cache=True, nogil=True)
def count_primes_between(
    lo: int, hi: int, primes: np.ndarray, segment_bytes: int = 0, block_bytes: int = 0
) -> int:  # pragma: no cover - jit
    """Count the primes p with ``lo <= p < hi``; ``primes`` must hold every prime <= sqrt(hi).

    ``primes`` may hold more (the chunks of a job share the primes up to sqrt(n)); those whose
    square is ``hi`` or more are ignored. ``segment_bytes`` and ``block_bytes`` (bytes of 30
    numbers; 0 picks them) are for tests and benchmarks: tiny sizes force every boundary case.
    """
    count = 0
    for p in (2, 3, 5):
        if lo <= p < hi:
            count += 1
    for p in PRESIEVED:  # the patterns clear these primes too; count them back in
        if lo <= p < hi:
            count += 1
    lo = max(lo, 7)
    if lo >= hi:
        return count
    # Byte j of the range stands for the numbers 30 * (first + j) + RESIDUES[b].
    first = lo // 30
    last = (hi - 1) // 30
    total = last - first + 1
    if segment_bytes <= 0:
        # At least half the largest sieving prime's stride (p bytes, p < sqrt(hi)), so that
        # every prime clears 4 bits or more per segment: the per-segment bookkeeping of the
        # large primes, not their crossings-off, would otherwise dominate beyond about 1e10.
        segment_bytes = MIN_SEGMENT_BYTES
        while segment_bytes < MAX_SEGMENT_BYTES and 4 * segment_bytes * segment_bytes < hi:
            segment_bytes *= 2
    if block_bytes <= 0:
        block_bytes = min(segment_bytes, BLOCK_BYTES)
    seg_len = (min(segment_bytes, total) + 7) // 8 * 8  # whole 64-bit words

    reach = min(seg_len, PATTERN_REACH)
    patterns, starts, periods = _presieve_patterns(reach)
    sieving, nxt = _sieving_primes(primes, lo, hi, first)
    n_small = 0
    while n_small < sieving.shape[0] and sieving[n_small] * SMALL_DIVISOR < block_bytes:
        n_small += 1
    small, small_nxt = sieving[:n_small], nxt[: 8 * n_small]
    large, large_nxt = sieving[n_small:], nxt[8 * n_small :]

    # Eight spare bytes past seg_len: the targets of the branch-free steps that clear nothing.
    seg = np.empty(seg_len + 8, dtype=np.uint8)
    words = seg[:seg_len].view(np.uint64)
    done = 0
    while done < total:
        length = min(seg_len, total - done)
        # Pre-sieve: the AND of the patterns at this segment's offset, a piece of at most
        # `reach` bytes at a time. Unsigned indices spare numba's negative-index wraparound
        # check, which would stop LLVM from vectorizing these loops.
        for piece in range(0, length, reach):
            size = min(reach, length - piece)
            out = seg[piece:]
            for g in range(periods.shape[0]):
                pattern = patterns[starts[g] + (first + done + piece) % periods[g] :]
                if g == 0:
                    for i in range(size):
                        out[np.uint64(i)] = pattern[np.uint64(i)]
                else:
                    for i in range(size):
                        out[np.uint64(i)] &= pattern[np.uint64(i)]
        for block in range(0, length, block_bytes):
            end = min(length, block + block_bytes)
            shift = length if end == length else 0
            _cross_off(seg, small_nxt, small, end, shift, seg_len)
        _cross_off(seg, large_nxt, large, length, length, seg_len)
        if done == 0:  # numbers below lo in the first byte
            for b in range(8):
                if 30 * first + RESIDUES[b] < lo:
                    seg[0] &= ~np.uint8(1 << b)
        n_words = (length + 7) // 8
        if done + length == total:  # numbers from hi on in the last byte, and the padding
            for b in range(8):
                if 30 * last + RESIDUES[b] >= hi:
                    seg[length - 1] &= ~np.uint8(1 << b)
            for i in range(length, 8 * n_words):
                seg[i] = 0
        for i in range(n_words):
            count += _popcount(words[i])
        done += length
    return count


@njit(cache=True, nogil=True)
def _presieve_patterns(extra):  # pragma: no cover - jit
    """The byte pattern of each group of :data:`PRESIEVE_GROUPS`, one after another in one array.

    Pattern g starts at ``starts[g]``: ``periods[g]`` bytes, then ``extra`` more that repeat
    them, so that the pattern of any piece of up to ``extra`` bytes is one contiguous slice.
    Building them costs about 10 us a call.
    """
    n_groups = GROUP_ENDS.shape[0]
    periods = np.ones(n_groups, dtype=np.int64)
    starts = np.zeros(n_groups + 1, dtype=np.int64)
    for g in range(n_groups):
        for p in PRESIEVED[GROUP_ENDS[g - 1] if g else 0 : GROUP_ENDS[g]]:
            periods[g] *= p
        starts[g + 1] = starts[g] + periods[g] + extra
    patterns = np.empty(starts[n_groups], dtype=np.uint8)
    for i in range(patterns.shape[0]):
        patterns[i] = 0xFF
    for g in range(n_groups):
        pattern = patterns[starts[g] : starts[g + 1]]
        period = periods[g]
        for p in PRESIEVED[GROUP_ENDS[g - 1] if g else 0 : GROUP_ENDS[g]]:
            for b in range(8):
                m = p * RESIDUES[b]  # the multiples p * (30 t + r) are p bytes apart
                mask = ~np.uint8(1 << BIT_OF[m % 30])
                for j in range(m // 30, period, p):
                    pattern[j] &= mask
        for i in range(extra):
            pattern[np.uint64(period + i)] = pattern[np.uint64(i)]
    return patterns, starts, periods


@njit(cache=True, nogil=True)
def _sieving_primes(primes, lo, hi, first):  # pragma: no cover - jit
    """The primes to sieve with (above the pre-sieved ones, square below ``hi``) and their state.

    The state of prime k is ``nxt[8 k + b]``: the byte (counted from ``first``) of its next
    multiple to clear in bit b, that is of the smallest p * q >= max(p^2, lo) with q coprime
    to 30 and p * q = RESIDUES[b] mod 30. The first 8 such q from ceil(start / p) on cover
    each residue class once.
    """
    largest = PRESIEVED[PRESIEVED.shape[0] - 1]
    begin = 0
    while begin < primes.shape[0] and primes[begin] <= largest:
        begin += 1
    end = begin
    while end < primes.shape[0] and primes[end] * primes[end] < hi:
        end += 1
    sieving = primes[begin:end]
    nxt = np.empty(8 * sieving.shape[0], dtype=np.int64)
    for k in range(sieving.shape[0]):
        p = sieving[k]
        q = (max(p * p, lo) + p - 1) // p
        q += TO_COPRIME[q % 30]
        row = 64 * BIT_OF[p % 30] + 8 * BIT_OF[q % 30]
        byte = (p * q) // 30 - first
        c = p // 30
        for j in range(8):
            nxt[8 * k + BIT[row + j]] = byte + c * STEP[row + j] + CARRY[row + j]
    return sieving, nxt


@njit(cache=True, nogil=True)
def _cross_off(seg, nxt, sieving, end, shift, spare):  # pragma: no cover - jit
    """Clear the multiples of the ``sieving`` primes below byte ``end``; rebase by ``shift``.

    On entry each slot holds the first multiple of its class not yet cleared, and the eight
    span less than p bytes (they start within 30 p numbers, and p > 30). The unrolled loop clears
    all eight while the highest is below ``end``; after it each slot needs at most one more
    step, which is made branch-free: a step that must not clear anything clears one of the
    spare bytes past the segment (``seg[spare + b]``) instead. On exit every slot lies in
    ``[end, end + p)``, the same invariant. Unsigned indices spare numba's negative-index
    wraparound check in the hot loop.
    """
    for k in range(sieving.shape[0]):
        p = sieving[k]
        x = 8 * k
        a0 = nxt[x]
        a1 = nxt[x + 1]
        a2 = nxt[x + 2]
        a3 = nxt[x + 3]
        a4 = nxt[x + 4]
        a5 = nxt[x + 5]
        a6 = nxt[x + 6]
        a7 = nxt[x + 7]
        i = min(min(min(a0, a1), min(a2, a3)), min(min(a4, a5), min(a6, a7)))
        span = max(max(max(a0, a1), max(a2, a3)), max(max(a4, a5), max(a6, a7))) - i
        if i + span < end:
            d0 = a0 - i
            d1 = a1 - i
            d2 = a2 - i
            d3 = a3 - i
            d4 = a4 - i
            d5 = a5 - i
            d6 = a6 - i
            d7 = a7 - i
            limit = end - span
            while i < limit:
                seg[np.uint64(i + d0)] &= np.uint8(0xFE)
                seg[np.uint64(i + d1)] &= np.uint8(0xFD)
                seg[np.uint64(i + d2)] &= np.uint8(0xFB)
                seg[np.uint64(i + d3)] &= np.uint8(0xF7)
                seg[np.uint64(i + d4)] &= np.uint8(0xEF)
                seg[np.uint64(i + d5)] &= np.uint8(0xDF)
                seg[np.uint64(i + d6)] &= np.uint8(0xBF)
                seg[np.uint64(i + d7)] &= np.uint8(0x7F)
                i += p
            a0 = i + d0
            a1 = i + d1
            a2 = i + d2
            a3 = i + d3
            a4 = i + d4
            a5 = i + d5
            a6 = i + d6
            a7 = i + d7
        c = a0 < end
        seg[np.uint64(a0 if c else spare)] &= np.uint8(0xFE)
        a0 += p if c else 0
        c = a1 < end
        seg[np.uint64(a1 if c else spare + 1)] &= np.uint8(0xFD)
        a1 += p if c else 0
        c = a2 < end
        seg[np.uint64(a2 if c else spare + 2)] &= np.uint8(0xFB)
        a2 += p if c else 0
        c = a3 < end
        seg[np.uint64(a3 if c else spare + 3)] &= np.uint8(0xF7)
        a3 += p if c else 0
        c = a4 < end
        seg[np.uint64(a4 if c else spare + 4)] &= np.uint8(0xEF)
        a4 += p if c else 0
        c = a5 < end
        seg[np.uint64(a5 if c else spare + 5)] &= np.uint8(0xDF)
        a5 += p if c else 0
        c = a6 < end
        seg[np.uint64(a6 if c else spare + 6)] &= np.uint8(0xBF)
        a6 += p if c else 0
        c = a7 < end
        seg[np.uint64(a7 if c else spare + 7)] &= np.uint8(0x7F)
        a7 += p if c else 0
        nxt[x] = a0 - shift
        nxt[x + 1] = a1 - shift
        nxt[x + 2] = a2 - shift
        nxt[x + 3] = a3 - shift
        nxt[x + 4] = a4 - shift
        nxt[x + 5] = a5 - shift
        nxt[x + 6] = a6 - shift
        nxt[x + 7] = a7 - shift
