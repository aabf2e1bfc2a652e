"""Chunk kernels of the array workloads: generate data inside the task, reduce it at once.

No big array ever passes through the driver: each chunk draws its own numbers from a generator
seeded by ``SeedSequence(seed, spawn_key=(chunk, stream))``, the documented way to give parallel
tasks independent, reproducible streams. The same job therefore produces the same numbers, bit
for bit, whatever backend or worker count runs it.

Chunks are generated and reduced in blocks of about :data:`BLOCK_ELEMENTS` numbers, a size that
stays in the core's L2 cache, so a chunk of any size needs little memory and the reduction reads
data that is still in cache. Blocks change neither the numbers drawn (a generator's stream does
not depend on how it is sliced) nor, for row means, the arithmetic. Sums use numpy's pairwise
summation rather than BLAS, whose result depends on its thread count and CPU kernel.
"""

from __future__ import annotations

import math

import numpy as np

#: Numbers per generate-and-reduce block: 256 KiB of float64. The kernels run at the speed of
#: numpy's PCG64 fill itself (about 4 GB/s a core on the issue 7 machine, as fast as filling
#: one 256 KiB buffer over and over, faster than filling a large array). Blocks of 32 Ki to
#: 256 Ki numbers measured within noise of each other, 4 Ki to 8 Ki ones 15-25 % slower
#: (numpy's per-call cost). It stays here because dot's partial sums, hence its exact result,
#: depend on it.
BLOCK_ELEMENTS = 1 << 15


def generator(seed: int, chunk: int, stream: int = 0) -> np.random.Generator:
    """The generator of one chunk's ``stream`` (0 and 1 for the two vectors of a dot product)."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(chunk, stream)))
    )


def row_means_chunk(seed: int, chunk: int, rows: int, cols: int) -> np.ndarray:
    """Row means of this chunk's ``rows x cols`` block of uniform [0, 1) numbers."""
    rng = generator(seed, chunk)
    block_rows = max(1, BLOCK_ELEMENTS // cols)
    buffer = np.empty((min(block_rows, rows), cols))
    means = np.empty(rows)
    for start in range(0, rows, block_rows):
        stop = min(rows, start + block_rows)
        block = buffer[: stop - start]
        rng.random(out=block)
        np.add.reduce(block, axis=1, out=means[start:stop])
    means /= cols
    return means


def dot_chunk(seed: int, chunk: int, length: int) -> float:
    """Dot product of this chunk's slices (``length`` numbers each) of the two vectors."""
    x_rng, y_rng = generator(seed, chunk, 0), generator(seed, chunk, 1)
    size = min(BLOCK_ELEMENTS, length)
    x, y = np.empty(size), np.empty(size)
    partials = np.empty(math.ceil(length / size))
    for b, start in enumerate(range(0, length, size)):
        k = min(size, length - start)
        xs, ys = x[:k], y[:k]
        x_rng.random(out=xs)
        y_rng.random(out=ys)
        np.multiply(xs, ys, out=xs)
        partials[b] = np.add.reduce(xs)
    return float(np.add.reduce(partials))


def sampled_chunk(seed: int, chunks: int) -> int:
    """The chunk the driver recomputes to check a result exactly; fixed by the seed."""
    return int(
        np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**32,))).integers(chunks)
    )
