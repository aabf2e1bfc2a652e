"""A backend's points along the axis: speedups against the reference, the law the data choose.

For each series (one backend, or one backend on GPUs) this module computes, from the points
:mod:`cluster_runner.analysis.aggregate` made:

- each point's speedup against the reference of :mod:`.baseline`, with the exact
  Hodges-Lehmann interval of the ratio of times (:func:`.intervals.ratio_interval`) and the
  level it really reaches; efficiency and Karp-Flatt against ``r = n / reference size``;
- in strong mode, linear, Amdahl and USL fitted to every run and one chosen by AICc
  (:func:`.models.choose_model`); in weak mode Gustafson's serial fraction with its interval.
  Predictions beyond the sizes measured only where the chosen law may be extrapolated (at least
  coefficients + 2 sizes), each with its confidence band;
- the Karp-Flatt trend over the runs (:func:`.metrics.karp_flatt_trend`).

Across series, :func:`compare_series` says whether two backends' scaling, and their times at
the largest shared size, differ, or cannot be told apart, at a false-difference rate of at most
5%: the time verdict is the exact Mann-Whitney test of :func:`.intervals.compare`; the scaling
verdict asks that the two speedups' intervals at 97.5% each do not overlap (Bonferroni: both
cover their truth with probability at least 95%, and two intervals that do cannot be apart).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from cluster_runner.analysis import metrics
from cluster_runner.analysis.intervals import ALPHA, compare, ratio_interval
from cluster_runner.analysis.models import Coefficient, ModelChoice, choose_model, gustafson_fit

if TYPE_CHECKING:
    from cluster_runner.analysis.aggregate import PointStats
    from cluster_runner.analysis.baseline import Baseline

#: Multiples of the largest measured size at which an extrapolable fit predicts the speedup.
PREDICT_AT = (2, 4, 10)


@dataclass(frozen=True)
class Series:
    """One line of a plot: a backend's points along the axis, and the law fitted to them."""

    backend: str
    workers: int | None  # on the chunks axis: the fixed size of the series
    points: tuple[PointStats, ...]
    base: int | None  # the reference's size (r = n / base); None: no speedup computed
    reference: str | None = None  # the point speedups are relative to, e.g. ``serial@1``
    reference_samples: tuple[float, ...] = ()  # its times
    fit: str | None = None  # the chosen law: linear, amdahl, usl (strong) or gustafson (weak)
    serial_fraction: float | None = None  # Amdahl's or USL's sigma, Gustafson's alpha
    predictions: dict[int, float] = field(default_factory=dict)  # size -> predicted speedup
    prediction_intervals: dict[int, tuple[float, float]] = field(default_factory=dict)
    models: ModelChoice | None = None  # every law fitted (strong), with AICc and words
    gustafson: Coefficient | None = None  # weak: alpha with its interval
    gustafson_sizes: int = 0  # distinct sizes behind it
    trend: metrics.Trend | None = None  # Karp-Flatt over the sizes above the reference
    own_base: int | None = None  # the series' smallest timed size: where its fit is anchored
    scale: float = 1.0  # speedup of ``own_base`` against the reference (1 for its own)

    @property
    def timed(self) -> tuple[PointStats, ...]:
        return tuple(p for p in self.points if p.time is not None)

    @property
    def chosen(self):
        """The chosen strong-scaling :class:`~.models.ModelFit`, or None."""
        if self.models is None or self.models.best is None:
            return None
        return self.models.fit(self.models.best)

    def curve(self, sizes) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None:
        """The fitted speedup at ``sizes`` against the reference, and its band (None: none).

        Strong: the chosen law's throughput over its value at ``own_base``, times ``scale``;
        weak: ``r - alpha (r - 1)``, its band from alpha's interval. None without a fit.
        """
        n = np.asarray(sizes, dtype=float)
        if self.fit == "gustafson" and self.gustafson is not None and self.own_base:
            r = n / self.own_base

            def law(alpha: float) -> np.ndarray:
                return self.scale * (r - alpha * (r - 1))

            g = self.gustafson
            if g.low is None or g.high is None:
                return law(g.value), None, None
            return law(g.value), law(g.high), law(g.low)
        fit = self.chosen
        if fit is None or not self.own_base:
            return None
        at_base = float(fit.throughput(self.own_base))
        centre = self.scale * fit.throughput(n) / at_base
        try:
            low, high = fit.band(n)
        except ValueError:
            return centre, None, None
        return centre, self.scale * low / at_base, self.scale * high / at_base

    def may_extrapolate(self) -> bool:
        """Whether the fit may be drawn and quoted beyond the sizes measured."""
        if self.fit == "gustafson":
            return self.gustafson_sizes >= 1 + 2
        fit = self.chosen
        return bool(fit and fit.can_extrapolate)


def build_series(
    backend: str,
    workers: int | None,
    points: list[PointStats],
    mode: str,
    axis: str,
    baseline: Baseline,
) -> Series:
    """A series with its speedups against ``baseline``, its fit and its Karp-Flatt trend."""
    timed = [p for p in points if p.time is not None]
    plain = Series(backend, workers, tuple(points), base=None)
    if axis not in ("workers", "nodes") or not timed or baseline.spec is None:
        return plain
    own = timed[0]
    if baseline.fixed:
        ref, ref_size, name = baseline.samples, baseline.size, baseline.spec
    elif len({p.size for p in timed}) >= 2:
        ref, ref_size, name = own.samples, own.size, f"{backend}@{own.size}"
    else:
        return replace(plain, own_base=own.size)  # one size and no common reference
    out = [_with_speedup(p, ref, ref_size, mode, baseline) for p in points]
    series = Series(
        backend, workers, tuple(out), base=ref_size, reference=name,
        reference_samples=tuple(ref), own_base=own.size,
        scale=next(p.speedup for p in out if p.size == own.size and p.time is not None),
    )  # fmt: skip
    timed = series.timed
    if len({p.size for p in timed}) < 2:
        return series
    sizes = [p.size for p in timed for _ in p.samples]
    times = [t for p in timed for t in p.samples]
    if mode == "weak":
        return _weak_fit(series, sizes, times)
    return _strong_fit(series, sizes, times, ref, ref_size)


def _with_speedup(p: PointStats, ref, ref_size: int, mode: str, baseline: Baseline) -> PointStats:
    if p.time is None:
        return p
    ratio = ratio_interval(ref, p.samples)
    r = p.size / ref_size
    s = statistics.median(ref) / p.time.median
    if baseline.fixed:
        is_ref = p.backend == baseline.backend and p.size == baseline.size
    else:
        is_ref = p.size == ref_size  # each series' own smallest size
    common = {"speedup_level": ratio.level, "reference": is_ref}
    if mode == "weak":
        return replace(
            p, speedup=r * s, speedup_low=r * ratio.low, speedup_high=r * ratio.high,
            efficiency=s, **common,
        )  # fmt: skip
    return replace(
        p, speedup=s, speedup_low=ratio.low, speedup_high=ratio.high,
        efficiency=metrics.efficiency(s, p.size, ref_size),
        karp_flatt=metrics.karp_flatt(s, p.size, ref_size), **common,
    )  # fmt: skip


def _strong_fit(series: Series, sizes, times, ref, ref_size: int) -> Series:
    choice = choose_model(sizes, times)
    series = replace(series, models=choice, fit=choice.best)
    fit = series.chosen
    if fit is not None and fit.model != "linear":
        series = replace(series, serial_fraction=fit.coef("sigma"))
    above = [(p.size, t) for p in series.timed if p.size > ref_size for t in p.samples]
    if above:
        t_ref = statistics.median(ref)
        kf = [metrics.karp_flatt(t_ref / t, n, ref_size) for n, t in above]
        series = replace(series, trend=metrics.karp_flatt_trend([n for n, _ in above], kf))
    return _predict(series)


def _weak_fit(series: Series, sizes, times) -> Series:
    try:
        alpha = gustafson_fit(sizes, times, base=series.own_base)
    except ValueError:
        return series
    series = replace(
        series, fit="gustafson", gustafson=alpha, serial_fraction=alpha.value,
        gustafson_sizes=len(set(sizes)),
    )  # fmt: skip
    return _predict(series)


def _predict(series: Series) -> Series:
    if not series.may_extrapolate():
        return series
    largest = max(p.size for p in series.timed)
    at = [m * largest for m in PREDICT_AT]
    curve = series.curve(at)
    if curve is None:
        return series
    centre, low, high = curve
    predictions = {n: float(v) for n, v in zip(at, centre, strict=True)}
    intervals = {}
    if low is not None and high is not None:
        intervals = {n: (float(a), float(b)) for n, a, b in zip(at, low, high, strict=True)}
    return replace(series, predictions=predictions, prediction_intervals=intervals)


# --- comparisons between series -----------------------------------------------------------


@dataclass(frozen=True)
class ScalingComparison:
    """Whether the two best-scaling series differ in speedup at the largest size they share."""

    size: int
    first: str  # the higher speedup
    second: str
    first_speedup: float
    second_speedup: float
    first_interval: tuple[float, float]  # at ``level`` each (Bonferroni: 1 - alpha / 2)
    second_interval: tuple[float, float]
    level: float  # the lower of the two intervals' achieved levels
    alpha: float
    verdict: str  # "different" or "cannot tell apart"
    reachable: bool  # whether these runs could reach the level at all


@dataclass(frozen=True)
class TimeComparison:
    """Whether the fastest series at a size is faster than the next: the exact verdict."""

    size: int
    fastest: str
    other: str
    fastest_median: float
    other_median: float
    ratio: float  # other / fastest, Hodges-Lehmann
    low: float
    high: float
    level: float
    p_value: float
    alpha: float
    verdict: str  # "faster" or "cannot tell apart" (fastest against other)
    min_repeats: int  # runs per side needed before a difference can be shown


def compare_series(series: tuple[Series, ...]) -> tuple[ScalingComparison | None, ...]:
    """``(scaling, time)`` comparisons of the series, each None where there is none to make."""
    return _compare_scaling(series), _compare_times(series)


def _compare_scaling(series: tuple[Series, ...]) -> ScalingComparison | None:
    with_speedup = [s for s in series if s.reference and len(s.timed) >= 2]
    if len(with_speedup) < 2:
        return None
    shared = set.intersection(*({p.size for p in s.timed} for s in with_speedup))
    sizes = [n for n in shared if all(n != s.base for s in with_speedup)]
    if not sizes:
        return None  # at the reference size every speedup is 1 by definition
    top = max(sizes)
    ranked = sorted(with_speedup, key=lambda s: -_at(s, top).speedup)
    a, b = ranked[0], ranked[1]
    pa, pb = _at(a, top), _at(b, top)
    level = 1 - ALPHA / 2
    ia = ratio_interval(a.reference_samples, pa.samples, level)
    ib = ratio_interval(b.reference_samples, pb.samples, level)
    r_a, r_b = (_r(pa, a), _r(pb, b))  # weak: scaled by r, as the speedups are
    first, second = (ia.low * r_a, ia.high * r_a), (ib.low * r_b, ib.high * r_b)
    reachable = ia.reaches_nominal and ib.reaches_nominal
    apart = reachable and (first[0] > second[1] or second[0] > first[1])
    return ScalingComparison(
        top, a.backend, b.backend, pa.speedup, pb.speedup, first, second,
        min(ia.level, ib.level), ALPHA, "different" if apart else "cannot tell apart", reachable,
    )  # fmt: skip


def _compare_times(series: tuple[Series, ...]) -> TimeComparison | None:
    by_size: dict[int, list[PointStats]] = {}
    for s in series:
        for p in s.timed:
            by_size.setdefault(p.size, []).append(p)
    shared = [n for n, ps in by_size.items() if len(ps) >= 2]
    if not shared:
        return None
    n = max(shared)
    fast, other = sorted(by_size[n], key=lambda p: p.time.median)[:2]
    verdict = compare(fast.samples, other.samples, names=(fast.backend, other.backend))
    ratio = ratio_interval(other.samples, fast.samples, 1 - ALPHA)
    return TimeComparison(
        n, fast.backend, other.backend, fast.time.median, other.time.median, ratio.estimate,
        ratio.low, ratio.high, ratio.level, verdict.p_value, verdict.alpha,
        "faster" if verdict.verdict == "faster" else "cannot tell apart", verdict.min_repeats,
    )  # fmt: skip


def _at(series: Series, size: int) -> PointStats:
    return next(p for p in series.timed if p.size == size)


def _r(p: PointStats, series: Series) -> float:
    """The factor a weak speedup carries over the plain ratio of times (1 in strong mode)."""
    plain = statistics.median(series.reference_samples) / p.time.median
    return p.speedup / plain if plain else 1.0
