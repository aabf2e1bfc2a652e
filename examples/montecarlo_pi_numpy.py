"""Monte Carlo estimate of pi with numpy: the same estimate, in vectorised chunks.

numpy's generators and array arithmetic release the GIL, so this one scales on ``threads``
too. It has no oracle of its own: the runner checks every result against a run of the same job
on ``serial`` (bit for bit: each chunk draws from its own seeded stream and the counts are
integers, so the answer cannot depend on the backend or the worker count).

    runner submit --job examples/montecarlo_pi_numpy.toml --backend threads --workers 2
"""

from __future__ import annotations

import numpy as np

from cluster_runner import workload

#: Points drawn at a time, so a chunk's memory stays small (2 x 8 MB).
BLOCK = 1_000_000


def split(samples: int = 50_000_000, chunks: int = 32, seed: int = 1):
    """One (seed, chunk, draws) per chunk, the draws split near-evenly."""
    base, extra = divmod(samples, chunks)
    return [(seed, i, base + (i < extra)) for i in range(chunks)]


def estimate(hits: list[int], samples: int) -> float:
    return 4 * sum(hits) / samples


@workload(split=split, reduce=estimate, weak="samples")
def count_hits(seed: int, chunk: int, draws: int) -> int:
    """Points inside the quarter circle, from the chunk's own stream (SeedSequence spawn key)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(chunk,)))
    hits = 0
    for start in range(0, draws, BLOCK):
        x, y = rng.random((2, min(BLOCK, draws - start)))
        hits += int(np.count_nonzero(x * x + y * y < 1.0))
    return hits
