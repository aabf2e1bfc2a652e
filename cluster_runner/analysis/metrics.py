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

Timings on a shared machine are noisy, so every point carries a confidence interval of its
median and every speedup one of its ratio, both from :mod:`cluster_runner.analysis.intervals`:
exact, distribution-free, and labelled with the level they really have (75% for 3 runs, not
95%). They replaced a percentile bootstrap whose "95%" was 75% at 3 runs (issue 14).
:func:`karp_flatt_trend` says whether the Karp-Flatt fraction grows with the size.

The closed-form fits :func:`amdahl_fit` and :func:`gustafson_fit` work on medians and give no
interval; reports use :mod:`cluster_runner.analysis.models`, which fits every run, gives every
coefficient an interval and refuses to extrapolate from too few sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cluster_runner.analysis.intervals import median_interval

#: The level of the Karp-Flatt trend's slope interval.
TREND_LEVEL = 0.95


@dataclass(frozen=True)
class SampleSummary:
    """A sample of timings in numbers: count, median, range and an exact CI of the median."""

    n: int
    median: float
    min: float
    max: float
    ci_low: float  # order-statistic confidence interval of the median
    ci_high: float
    ci_level: float = 0.0  # the coverage that interval really has (0.75 for 3 runs)


def summarize(samples: Sequence[float]) -> SampleSummary:
    """Median, min, max and the exact order-statistic interval of the median, with its level.

    With a single sample the interval is that sample, at level 0: no spread can be claimed.
    """
    x = _array(samples)
    ci = median_interval(x)
    return SampleSummary(ci.n, ci.median, float(x.min()), float(x.max()), ci.low, ci.high, ci.level)


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


@dataclass(frozen=True)
class Trend:
    """How the Karp-Flatt fraction moves with the size: a least-squares slope with its interval.

    ``kind`` is ``growing`` or ``falling`` when the slope's interval excludes 0, ``constant``
    when it does not (no trend these runs can show), ``unknown`` with one size above the base.
    """

    kind: str
    slope: float | None  # change of e per unit of size
    low: float | None
    high: float | None
    level: float
    first: tuple[float, float] | None  # (size, median e) at the smallest size above the base
    last: tuple[float, float] | None  # at the largest


def karp_flatt_trend(
    sizes: Sequence[float], values: Sequence[float], level: float = TREND_LEVEL
) -> Trend:
    """The trend of per-run Karp-Flatt fractions ``values`` over ``sizes`` (one entry per run).

    Constant ``e`` is a fixed serial part (Amdahl); ``e`` growing with the size is overhead
    that grows with the workers (Karp and Flatt, CACM 33(5), 1990). The slope of ``e`` on the
    size by ordinary least squares, with a Student-t interval over the runs' scatter, decides.
    """
    from scipy import stats

    n, e = _array(sizes), _array(values)
    distinct = np.unique(n)
    medians = [(float(s), float(np.median(e[n == s]))) for s in distinct]
    first, last = (medians[0], medians[-1]) if medians else (None, None)
    if distinct.size < 2:
        return Trend("unknown", None, None, None, level, first, last)
    x = n - n.mean()
    slope = float(np.sum(x * (e - e.mean())) / np.sum(x * x))
    dof = n.size - 2
    if dof < 1:
        return Trend("unknown", slope, None, None, level, first, last)
    resid = e - e.mean() - slope * x
    stderr = float(np.sqrt(np.sum(resid**2) / dof / np.sum(x * x)))
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * stderr
    low, high = slope - half, slope + half
    kind = "growing" if low > 0 else "falling" if high < 0 else "constant"
    return Trend(kind, slope, low, high, level, first, last)


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
