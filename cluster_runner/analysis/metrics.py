"""Scaling metrics: pure functions of measured times, no I/O and no hidden state.

Everything a scaling report states is computed here, from numbers, so each formula can be
checked by hand against a worked example (``tests/test_metrics.py`` does).

Notation: ``n`` is the size of a point (workers, or nodes) and ``base`` the smallest size
measured, normally 1. ``T(n)`` is the median wall time at size ``n``. With ``r = n / base``:

- speedup ``S(n) = T(base) / T(n)`` and efficiency ``E(n) = S(n) / r``: with base 1, the
  textbook ``T(1)/T(N)`` and ``S/N``;
- Karp-Flatt experimentally determined serial fraction ``e = (1/S - 1/r) / (1 - 1/r)``:
  constant ``e`` means a fixed serial part, ``e`` growing with ``n`` means overhead that grows
  with the workers (Karp and Flatt, CACM 33(5), 1990);
- Amdahl's law ``T(n) = T1 * (f + (1 - f) / n)``: :func:`amdahl_fit` finds the serial
  fraction ``f`` that fits *all* points by least squares, and predicts beyond them;
- Gustafson's law for weak scaling, where the problem grows with ``n``: scaled speedup
  ``S(n) = r * T(base) / T(n)`` (what ``r`` times the work would have taken at the base size,
  over what it took, assuming the work grows linearly with the problem) and its fit
  ``S = r - alpha * (r - 1)`` (:func:`gustafson_fit`).

Timings on a shared machine are noisy, so every point carries a bootstrap confidence interval
of its median, and so does every ratio of medians (a speedup, or one backend's time over
another's): a ratio whose interval contains 1 is not a difference the data can show. The
bootstrap is seeded, so the same samples always give the same interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Confidence of every interval the runner reports.
CONFIDENCE = 0.95
#: Bootstrap resamples: enough for stable 2.5% and 97.5% quantiles.
RESAMPLES = 4000


@dataclass(frozen=True)
class SampleSummary:
    """A sample of timings in numbers: count, median, range and a CI of the median."""

    n: int
    median: float
    min: float
    max: float
    ci_low: float  # bootstrap confidence interval of the median
    ci_high: float


def summarize(samples: Sequence[float], *, seed: int = 0) -> SampleSummary:
    """Median, min, max and a bootstrap confidence interval of the median.

    With a single sample the interval is that sample: no spread can be claimed.
    """
    x = _array(samples)
    low, high = bootstrap_ci(x, seed=seed)
    return SampleSummary(
        int(x.size), float(np.median(x)), float(x.min()), float(x.max()), low, high
    )


def bootstrap_ci(
    samples: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median of ``samples``.

    With few samples (3 repeats) the interval is wide and coarse, and it should be: it tells
    the reader that three runs cannot pin a median down more finely.
    """
    x = _array(samples)
    stats = _boot_medians(x, resamples, np.random.default_rng(seed))
    return _quantiles(stats, confidence)


def ratio_ci(
    numerator: Sequence[float],
    denominator: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``median(numerator) / median(denominator)`` and a bootstrap interval for it.

    The two samples are resampled independently (they come from different runs). Used for a
    speedup ``T(base) / T(n)`` and for one backend's time over another's at the same size.
    """
    a, b = _array(numerator), _array(denominator)
    rng = np.random.default_rng(seed)
    ratios = _boot_medians(a, resamples, rng) / _boot_medians(b, resamples, rng)
    low, high = _quantiles(ratios, confidence)
    return float(np.median(a) / np.median(b)), low, high


def interval_excludes(low: float, high: float, value: float = 1.0) -> bool:
    """Whether a confidence interval lies wholly on one side of ``value``: a real difference."""
    return value < low or value > high


def speedup(t_base: float, t_n: float) -> float:
    """``S = T(base) / T(n)``."""
    return t_base / t_n


def efficiency(speedup_n: float, n: int, base: int = 1) -> float:
    """``E = S / (n / base)``: 1.0 is perfect scaling."""
    return speedup_n * base / n


def karp_flatt(speedup_n: float, n: int, base: int = 1) -> float | None:
    """The experimentally determined serial fraction; ``None`` at the base size itself."""
    r = n / base
    if r <= 1:
        return None
    return (1 / speedup_n - 1 / r) / (1 - 1 / r)


def scaled_speedup(t_base: float, t_n: float, n: int, base: int = 1) -> float:
    """Gustafson's scaled speedup of a weak-scaling point: ``(n / base) * T(base) / T(n)``."""
    return (n / base) * t_base / t_n


def weak_efficiency(t_base: float, t_n: float) -> float:
    """``T(base) / T(n)`` in weak scaling: 1.0 when n times the work takes the same time."""
    return t_base / t_n


@dataclass(frozen=True)
class AmdahlFit:
    """Amdahl's law fitted to measured times: ``T(n) = t1 * (f + (1 - f) / n)``."""

    serial_fraction: float  # f, in [0, 1]
    t1: float  # the fitted time on one worker
    rms_relative_error: float  # root mean square of (fit - measured) / measured

    def time(self, n: float) -> float:
        """The fitted time at size ``n``."""
        return self.t1 * (self.serial_fraction + (1 - self.serial_fraction) / n)

    def speedup(self, n: float, base: float = 1) -> float:
        """The fitted speedup at ``n`` relative to ``base``; ``1 / f`` is its limit."""
        return self.time(base) / self.time(n)


def amdahl_fit(sizes: Sequence[float], times: Sequence[float]) -> AmdahlFit:
    """Least-squares fit of Amdahl's law to every point ``(n, T(n))``.

    ``T(n) = a + b / n`` is linear in ``a = t1 * f`` and ``b = t1 * (1 - f)``; the fit
    minimises the *relative* residuals ``(a + b/n - T) / T``, so a slow 1-worker point does not
    outweigh the fast many-worker ones. ``a`` and ``b`` are kept non-negative (a superlinear
    curve fits as ``f = 0``; a curve that slows down with more workers as ``f = 1``).
    Needs at least two distinct sizes.
    """
    n, t = _array(sizes), _array(times)
    if n.size != t.size:
        raise ValueError("sizes and times differ in length")
    if np.unique(n).size < 2:
        raise ValueError("an Amdahl fit needs at least two distinct sizes")
    design = np.column_stack([1 / t, 1 / (n * t)])  # rows of (a + b/n) / T
    (a, b), *_ = np.linalg.lstsq(design, np.ones_like(t), rcond=None)
    if a < 0:  # best non-negative fit with the serial part at zero
        a, b = 0.0, float(np.sum(1 / (n * t)) / np.sum(1 / (n * t) ** 2))
    elif b < 0:
        a, b = float(np.sum(1 / t) / np.sum(1 / t**2)), 0.0
    t1 = a + b
    fitted = a + b / n
    rms = float(np.sqrt(np.mean(((fitted - t) / t) ** 2)))
    return AmdahlFit(serial_fraction=float(a / t1), t1=float(t1), rms_relative_error=rms)


@dataclass(frozen=True)
class GustafsonFit:
    """Gustafson's law fitted to scaled speedups: ``S(r) = r - alpha * (r - 1)``."""

    serial_fraction: float  # alpha, in [0, 1]: the serial share of the parallel run's time

    def scaled_speedup(self, n: float, base: float = 1) -> float:
        r = n / base
        return r - self.serial_fraction * (r - 1)


def gustafson_fit(
    sizes: Sequence[float], scaled_speedups: Sequence[float], base: float = 1
) -> GustafsonFit:
    """Least-squares ``alpha`` over every point: ``r - S = alpha * (r - 1)``, clipped to [0, 1].

    The base point (``r = 1``) carries no information and drops out by itself.
    """
    r = _array(sizes) / base
    s = _array(scaled_speedups)
    x = r - 1
    if not np.any(x > 0):
        raise ValueError("a Gustafson fit needs a size above the base size")
    alpha = float(np.sum(x * (r - s)) / np.sum(x * x))
    return GustafsonFit(serial_fraction=min(max(alpha, 0.0), 1.0))


def cpu_utilisation(cpu_s: float, wall_s: float, workers: int) -> float:
    """Share of ``workers`` cores kept busy: ``cpu_s / (wall_s * workers)``.

    The CPU time is the whole process tree's (driver, engine daemons, workers), so a value
    above 1 means the engine burned more than the cores it was given.
    """
    return cpu_s / (wall_s * workers)


def task_overhead(wall_s: float, busy_s: float, tasks: int, workers: int) -> float:
    """Worker time per task not spent inside task bodies: ``(workers * wall - busy) / tasks``.

    ``busy`` is the sum of the tasks' own run times, so what is left of the workers' time is
    scheduling, serialisation, transfer and idling. It includes idling from load imbalance,
    which matters only when there are few tasks per worker.
    """
    return max(workers * wall_s - busy_s, 0.0) / tasks


def overhead_share(wall_s: float, busy_s: float, workers: int) -> float:
    """Share of the workers' time not spent in task bodies: ``1 - busy / (workers * wall)``.

    Above 0.5, per-task overhead costs more than the work itself: the tasks are too small.
    """
    return min(max(1 - busy_s / (workers * wall_s), 0.0), 1.0)


def first_above(xs: Sequence[float], ys: Sequence[float], threshold: float) -> float | None:
    """The smallest ``x`` whose ``y`` is above ``threshold``, or ``None`` (xs need no order)."""
    hits = [x for x, y in zip(xs, ys, strict=True) if y > threshold]
    return min(hits) if hits else None


def _array(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("expected a non-empty sequence of numbers")
    return x


def _boot_medians(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    if x.size == 1:
        return np.full(resamples, x[0])
    picks = rng.integers(0, x.size, size=(resamples, x.size))
    return np.median(x[picks], axis=1)


def _quantiles(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return float(low), float(high)
