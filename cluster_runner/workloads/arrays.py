"""Chunk kernels of the array workloads, written once for numpy (CPU) and CuPy (GPU).

No big array ever passes through the driver: each chunk draws its own numbers from a generator
seeded by ``SeedSequence(seed, spawn_key=(chunk, stream))``, the documented way to give parallel
tasks independent, reproducible streams. The same job therefore produces the same numbers, bit
for bit, whatever backend or worker count runs it.

The kernels take their array namespace ``xp`` from :func:`cluster_runner.devices.array_module`:

- **CPU** (numpy, PCG64): chunks are generated and reduced in blocks of :data:`BLOCK_ELEMENTS`
  numbers, a size that stays in the core's L2 cache, so a chunk of any size needs little memory
  and the reduction reads data that is still in cache. Blocks change neither the numbers drawn
  (a generator's stream does not depend on how it is sliced) nor, for row means, the
  arithmetic. Sums use numpy's pairwise summation rather than BLAS, whose result depends on its
  thread count and CPU kernel.
- **GPU** (CuPy, cuRAND XORWOW seeded from the same SeedSequence): the numbers are drawn on the
  device, so no chunk crosses PCIe; only the row means or one partial sum come back. Blocks are
  :data:`GPU_BLOCK_ELEMENTS` numbers, large enough to fill the device. GPU and CPU draws differ
  by design (different generators), so GPU results equal each other, not the CPU's. The kernel
  reports the seconds it spent generating, computing and copying back (:class:`Phased`), each
  measured after synchronising the device, so queued work is not mistaken for finished work.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numpy as np

from cluster_runner.devices import CPU, array_module, device_context, device_name, synchronize
from cluster_runner.graph import Phased

#: Numbers per generate-and-reduce block on the CPU: 256 KiB of float64. The kernels run at
#: the speed of numpy's PCG64 fill itself (about 4 GB/s a core on the issue 7 machine, as fast
#: as filling one 256 KiB buffer over and over, faster than filling a large array). Blocks of
#: 32 Ki to 256 Ki numbers measured within noise of each other, 4 Ki to 8 Ki ones 15-25 %
#: slower (numpy's per-call cost). It stays fixed because dot's partial sums, hence its exact
#: result, depend on it.
BLOCK_ELEMENTS = 1 << 15
#: Numbers per block on a GPU: 256 MiB of float64, enough to keep every SM busy.
GPU_BLOCK_ELEMENTS = 1 << 25


def generator(seed: int, chunk: int, stream: int = 0, xp: ModuleType = np) -> Any:
    """The generator of one chunk's ``stream`` (0 and 1 for the two vectors of a dot product)."""
    sequence = np.random.SeedSequence(seed, spawn_key=(chunk, stream))
    if xp is np:
        return np.random.Generator(np.random.PCG64(sequence))
    return xp.random.Generator(xp.random.XORWOW(sequence))


def _draw(xp: ModuleType, rng: Any, out: Any) -> Any:
    """``out`` filled with uniform [0, 1) numbers; on a GPU, a fresh array of that shape.

    CuPy's ``random(out=...)`` draws into a temporary and copies it over, an extra pass over
    device memory, so on a GPU the drawn array itself is used instead of the buffer.
    """
    if xp is np:
        rng.random(out=out)
        return out
    return rng.random(size=out.shape)


class _PhaseClock:
    """Seconds per phase of a GPU kernel, each read after the device has finished its work."""

    def __init__(self, xp: ModuleType) -> None:
        self.xp = xp
        self.phases = {"generate_s": 0.0, "compute_s": 0.0, "reduce_s": 0.0}

    @contextmanager
    def __call__(self, phase: str):
        began = time.perf_counter()
        yield
        synchronize(self.xp)
        self.phases[phase] += time.perf_counter() - began


@contextmanager
def _untimed(phase: str):
    yield


def row_means_chunk(seed: int, chunk: int, rows: int, cols: int, device: str = CPU) -> Any:
    """Row means of this chunk's ``rows x cols`` block of uniform [0, 1) numbers.

    Returns a numpy array on the CPU, and a :class:`Phased` numpy array on a GPU.
    """
    xp = array_module(device)
    with device_context(xp):
        clock = _PhaseClock(xp) if xp is not np else _untimed
        rng = generator(seed, chunk, 0, xp)
        block_elements = BLOCK_ELEMENTS if xp is np else GPU_BLOCK_ELEMENTS
        block_rows = max(1, block_elements // cols)
        buffer = xp.empty((min(block_rows, rows), cols))
        means = xp.empty(rows)
        for start in range(0, rows, block_rows):
            stop = min(rows, start + block_rows)
            with clock("generate_s"):
                block = _draw(xp, rng, buffer[: stop - start])
            with clock("compute_s"):
                block.sum(axis=1, out=means[start:stop])
        with clock("compute_s"):
            means /= cols
        if xp is np:
            return means
        with clock("reduce_s"):
            host = means.get()
        return Phased(host, clock.phases, device_name(xp))


def dot_chunk(seed: int, chunk: int, length: int, device: str = CPU) -> Any:
    """Dot product of this chunk's slices (``length`` numbers each) of the two vectors.

    Returns a float on the CPU, and a :class:`Phased` float on a GPU.
    """
    xp = array_module(device)
    with device_context(xp):
        clock = _PhaseClock(xp) if xp is not np else _untimed
        x_rng, y_rng = generator(seed, chunk, 0, xp), generator(seed, chunk, 1, xp)
        size = min(BLOCK_ELEMENTS if xp is np else GPU_BLOCK_ELEMENTS, length)
        x, y = xp.empty(size), xp.empty(size)
        partials = xp.empty(math.ceil(length / size))
        for b, start in enumerate(range(0, length, size)):
            k = min(size, length - start)
            with clock("generate_s"):
                xs = _draw(xp, x_rng, x[:k])
                ys = _draw(xp, y_rng, y[:k])
            with clock("compute_s"):
                xp.multiply(xs, ys, out=xs)
                partials[b] = xs.sum()
        with clock("reduce_s"):
            total = float(partials.sum())
        if xp is np:
            return total
        return Phased(total, clock.phases, device_name(xp))


def sampled_chunk(seed: int, chunks: int) -> int:
    """The chunk the driver recomputes to check a result exactly; fixed by the seed."""
    sequence = np.random.SeedSequence(seed, spawn_key=(2**32,))
    return int(np.random.default_rng(sequence).integers(chunks))
