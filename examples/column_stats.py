"""Per-column mean and standard deviation of an array the driver loads: data the driver holds.

Most code starts from data it already has: here a 2-D ``.npy`` file (``path = "..."``) or, with
no path, a seeded random array of ``rows x cols``. ``load`` (the workload's ``data=``) runs once
in the driver; the runner hands its value to every chunk as the chunk's last argument, the best
way the backend has (shared memory on ``local``, one ``ray.put`` on Ray, one scatter on Dask;
``--transfer copy`` sends it with every task instead, to see what sharing saves). Each chunk
sums its band of rows per column; the reduce turns the sums into means and deviations.

    runner submit --job examples/column_stats.toml --backend local --workers 2
    runner submit --job examples/column_stats.toml --set path=data.npy --transfer copy
"""

from __future__ import annotations

import functools

import numpy as np

from cluster_runner import workload

#: How close the result must be to numpy's own: sums of squares lose about 2 log10(mean / std)
#: digits to cancellation (1.4 here). For data far from zero, subtract a rough mean first, or
#: combine (count, mean, M2) per band instead (Chan, Golub and LeVeque's update).
RTOL = 1e-9


# The job's parameters are split's and load's, as their signatures declare them (check gets
# those it names): chunks is split's; path, rows, cols and seed are load's.
def split(chunks: int = 16):
    """Chunk i of n takes the i-th band of rows of whatever array load returns."""
    return [(i, chunks) for i in range(chunks)]


def load(path: str = "", rows: int = 200_000, cols: int = 64, seed: int = 0) -> np.ndarray:
    """The data, in the driver: the .npy file at ``path``, else a seeded random array
    (``rows`` and ``seed`` then matter, and ``rows`` grows with the workers in weak scaling)."""
    return _loaded(path, rows, cols, seed)


@functools.lru_cache(maxsize=1)  # once for the runs and the check; one array kept at a time
def _loaded(path: str, rows: int, cols: int, seed: int) -> np.ndarray:
    if path:
        array = np.load(path, mmap_mode=None)  # read whole into memory: the driver holds it
        if array.ndim != 2:
            raise ValueError(f"{path}: expected a 2-D array, got shape {array.shape}")
        return array
    return np.random.default_rng(seed).normal(10.0, 2.0, size=(rows, cols))


def combine(parts: list[tuple[int, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Reduce (on a worker): rows, sums and sums of squares of the bands -> mean and std."""
    count = sum(n for n, _, _ in parts)
    mean = sum(s for _, s, _ in parts) / count
    variance = sum(q for _, _, q in parts) / count - mean**2
    return mean, np.sqrt(np.maximum(variance, 0.0))  # rounding may dip just below zero


def check(value: tuple[np.ndarray, np.ndarray], path: str, rows: int, cols: int, seed: int):
    """Verify (in the driver): numpy's own mean and std of the whole array, within RTOL."""
    data = load(path, rows, cols, seed)
    mean, std = value
    return np.allclose(mean, data.mean(axis=0), rtol=RTOL, atol=0) and np.allclose(
        std, data.std(axis=0), rtol=RTOL, atol=RTOL
    )


@workload(split=split, data=load, reduce=combine, verify=check, weak="rows")
def band_sums(index: int, chunks: int, data: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """One band of rows: its row count, and per column the sum and the sum of squares.

    ``data`` is the whole array, read-only (a view of shared memory on ``local``): slice it,
    never write to it.
    """
    n = len(data)
    band = data[index * n // chunks : (index + 1) * n // chunks]
    return len(band), band.sum(axis=0), np.square(band).sum(axis=0)
