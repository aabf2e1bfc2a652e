"""Monte Carlo estimate of pi in pure Python: the GIL lesson.

Each chunk draws points in the unit square with its own seeded generator and counts those
inside the quarter circle; the reduce turns the counts into an estimate of pi. The work is
pure-Python bytecode, which holds the GIL: on the ``threads`` backend it does not get faster
with more threads (except on a free-threaded CPython), while on ``local`` (processes) it does.

Verified by its own statistical check: a correct estimate from N points lies within five
standard errors of pi (the error of a failed check on correct code: about 6e-7).

    runner submit --job examples/montecarlo_pi.toml --backend local
    runner scale --job examples/montecarlo_pi.toml --backend threads,local --workers 1,2,4,8
"""

from __future__ import annotations

import math
import random

from cluster_runner import Verification, workload

#: Standard errors a correct estimate may be off by.
Z_LIMIT = 5.0


def split(samples: int = 4_000_000, chunks: int = 32, seed: int = 1):
    """The job's parameters; one (seed, chunk, draws) per chunk, the draws split near-evenly."""
    base, extra = divmod(samples, chunks)
    return [(seed, i, base + (i < extra)) for i in range(chunks)]


def estimate(hits: list[int], samples: int) -> float:
    """The reduce: four times the fraction of points inside the quarter circle."""
    return 4 * sum(hits) / samples


def within_error(pi: float, samples: int) -> Verification:
    """Its own oracle: within Z_LIMIT standard errors of pi."""
    p = math.pi / 4
    error = 4 * math.sqrt(p * (1 - p) / samples)
    z = (pi - math.pi) / error
    return Verification(
        abs(z) < Z_LIMIT,
        f"estimate within {Z_LIMIT:g} standard errors of pi (z = {z:+.2f})",
        math.pi,
    )


@workload(split=split, reduce=estimate, verify=within_error, weak="samples")
def count_hits(seed: int, chunk: int, draws: int) -> int:
    """Points of ``draws`` uniform draws in the unit square that fall in the quarter circle."""
    rng = random.Random(seed * 1_000_003 + chunk)
    draw = rng.random
    hits = 0
    for _ in range(draws):
        x, y = draw(), draw()
        if x * x + y * y < 1.0:
            hits += 1
    return hits
