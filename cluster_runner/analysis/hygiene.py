"""Measurement hygiene per point, as hyperfine users expect, with warnings that say what to do.

A figure is only as good as the runs behind it. For each point (one configuration's repeated
timings) :func:`check_point` reports:

- the coefficient of variation (standard deviation over mean), the spread people compare;
- outliers by the median absolute deviation: a run is flagged when its modified z-score
  ``0.6745 |x - median| / MAD`` exceeds 3.5 (Iglewicz & Hoaglin, *How to Detect and Handle
  Outliers*, ASQC 1993). They are *kept*: the median and its rank interval
  (:mod:`.intervals`) are robust to them, and dropping runs would bias the figure towards the
  fast ones. The report names which runs they are;
- a cold first run: hyperfine warns when the first run is much slower than the rest, a sign of
  caches, JIT compilation or imports not done before timing (issue 14's false 3x gap of the
  serial backend). Here: the first run is above every other and more than ``cold_factor``
  times their median;
- whether the interval of the median is as precise as asked (``--precision P``): its
  half-width at the nominal level is at most P% of the median, *and* the interval reaches the
  nominal level at all (3 runs never do at 95%). :func:`precision_reached` drives a
  repeat-until-precise loop bounded by ``--max-repeats``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cluster_runner.analysis.intervals import NOMINAL, median_interval, median_ranks

#: Modified z-score above which a run is an outlier (Iglewicz & Hoaglin 1993).
OUTLIER_Z = 3.5
#: A first run this many times the median of the others, and above all of them, is cold.
COLD_FACTOR = 1.5
#: Coefficient of variation above which a point is called noisy.
NOISY_CV = 0.10
#: Runs shorter than this are dominated by timer, start-up and scheduling noise.
SHORT_RUN_S = 0.1


@dataclass(frozen=True)
class Finding:
    """One warning about a measurement, for tools: what kind, where, the words, the fix."""

    kind: str  # cold, outliers, few-runs, noisy, short-runs, precision, oversubscribed, ...
    where: str  # the point (``local x2``), or ``""`` for the whole report
    text: str  # the warning in words, as the report prints it
    fix: str | None = None  # the change that addresses it, e.g. ``--repeat 10``


@dataclass(frozen=True)
class PrecisionCheck:
    """Whether the median is known as precisely as asked."""

    reached: bool
    half_width_pct: float  # the interval's larger half-width, in percent of the median
    target_pct: float
    level: float  # the interval's achieved level
    n: int
    repeats_needed: int | None  # an estimate of the total runs needed, None when reached
    words: str


@dataclass(frozen=True)
class PointHygiene:
    """Spread, outliers and warm-up of one point's runs, in numbers and words."""

    n: int
    median: float
    cv: float | None  # None for one run
    mad: float
    outliers: tuple[int, ...]  # 0-based indices of the runs flagged (kept in every figure)
    cold_first: bool
    first_over_rest: float | None  # first run / median of the others
    warnings: tuple[str, ...]  # the words of ``findings``
    findings: tuple[Finding, ...] = ()


def check_point(
    samples: Sequence[float],
    *,
    label: str = "this point",
    level: float = NOMINAL,
    outlier_z: float = OUTLIER_Z,
    cold_factor: float = COLD_FACTOR,
    noisy_cv: float = NOISY_CV,
    short_run_s: float = SHORT_RUN_S,
) -> PointHygiene:
    """Check one point's runs, in the order they ran; see the module docstring for each test."""
    x = np.asarray(samples, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("expected a non-empty sequence of times")
    median = float(np.median(x))
    mad = float(np.median(np.abs(x - median)))
    cv = float(np.std(x, ddof=1) / np.mean(x)) if x.size > 1 else None
    outliers = outlier_runs(x, outlier_z)
    first_over_rest = None
    cold = False
    if x.size >= 3:
        rest = x[1:]
        first_over_rest = float(x[0] / np.median(rest))
        cold = is_cold(float(x[0]), rest, cold_factor)
    found: list[Finding] = []

    def warn(kind: str, text: str, fix: str | None) -> None:
        found.append(Finding(kind, label, f"{label}: {text}", fix))

    if cold:
        warn(
            "cold",
            f"the first run took {first_over_rest:.2g}x the others' median (cold: "
            "caches, imports or JIT compilation in the timed run); add --warmup 1",
            "--warmup 1",
        )
    if outliers:
        runs = ", ".join(str(i + 1) for i in outliers)
        warn(
            "outliers",
            f"run(s) {runs} are outliers by median absolute deviation (kept; the median "
            "is robust to them); check for other load on the machine",
            None,
        )
    needed = _runs_for_level(level)
    if x.size == 1:
        warn("few-runs", "1 run gives no interval at all; add --repeat 10", "--repeat 10")
    elif x.size < needed:
        achieved = median_ranks(x.size, level)[2]
        warn(
            "few-runs",
            f"{x.size} run(s) give a {100 * achieved:.3g}% interval of the median, not "
            f"{100 * level:.3g}%; add --repeat {max(needed, 10)}",
            f"--repeat {max(needed, 10)}",
        )
    if cv is not None and cv > noisy_cv:
        warn(
            "noisy",
            f"noisy, coefficient of variation {100 * cv:.0f}%; add --repeat 10 "
            "or quiet the machine",
            "--repeat 10",
        )
    if median < short_run_s:
        warn(
            "short-runs",
            f"runs take {1000 * median:.3g} ms, where start-up and timer noise "
            "dominate; give chunks more work (e.g. --set n=1e10)",
            "--set n=1e10",
        )
    return PointHygiene(
        n=int(x.size),
        median=median,
        cv=cv,
        mad=mad,
        outliers=outliers,
        cold_first=cold,
        first_over_rest=first_over_rest,
        warnings=tuple(f.text for f in found),
        findings=tuple(found),
    )


def counted(times: Sequence[float], cold: Sequence[bool]) -> list[int]:
    """Indices of the runs that count: all but those recorded ``cold`` (first on a fresh
    backend) that are also measurably cold against the runs not so recorded (:func:`is_cold`).
    """
    warm = np.asarray([t for t, c in zip(times, cold, strict=True) if not c], dtype=float)
    if warm.size < 2:  # too few to judge (is_cold): every run counts
        return list(range(len(times)))
    top, limit = warm.max(), COLD_FACTOR * np.median(warm)  # once, not once a cold run
    return [
        i
        for i, (t, c) in enumerate(zip(times, cold, strict=True))
        if not (c and t > top and t > limit)
    ]


def is_cold(first: float, rest: Sequence[float], cold_factor: float = COLD_FACTOR) -> bool:
    """Whether a first run is cold: slower than every other run, and ``cold_factor`` times
    their median. Needs at least two other runs to judge; with fewer it says no."""
    others = np.asarray(rest, dtype=float)
    if others.size < 2:
        return False
    return bool(first > others.max() and first > cold_factor * np.median(others))


def outlier_runs(samples: Sequence[float], z: float = OUTLIER_Z) -> tuple[int, ...]:
    """0-based indices of runs whose modified z-score ``0.6745 |x - med| / MAD`` exceeds ``z``.

    With a MAD of zero (most runs identical) any run off the common value is flagged.
    """
    x = np.asarray(samples, dtype=float)
    if x.size < 3:
        return ()
    median = np.median(x)
    deviation = np.abs(x - median)
    mad = np.median(deviation)
    flagged = deviation > 0 if mad == 0 else 0.6745 * deviation / mad > z
    return tuple(int(i) for i in np.flatnonzero(flagged))


def precision_reached(
    samples: Sequence[float], target_pct: float, *, level: float = NOMINAL
) -> PrecisionCheck:
    """Whether the median's interval half-width is at most ``target_pct`` percent of the median.

    For ``--precision P`` with ``--max-repeats``: repeat while this says not reached. An
    interval that cannot reach the nominal level (too few runs) never counts as precise. The
    estimate of runs needed scales the half-width as ``1 / sqrt(n)``, which holds for the
    median of any smooth distribution; it is a guide, and the loop checks again after each run.
    """
    if target_pct <= 0:
        raise ValueError("the target precision must be a positive percentage")
    interval = median_interval(samples, level)
    half_pct = 100 * interval.half_width / interval.median if interval.median > 0 else math.inf
    reached = interval.reaches_nominal and half_pct <= target_pct
    needed = None
    if not reached:
        floor = _runs_for_level(level)
        scaled = interval.n * (half_pct / target_pct) ** 2 if half_pct > 0 else interval.n
        needed = max(floor, interval.n + 1, math.ceil(scaled))
    if reached:
        words = (
            f"precise enough: {100 * interval.level:.3g}% interval within ±{half_pct:.2g}% of "
            f"the median (target {target_pct:g}%) after {interval.n} runs"
        )
    elif not interval.reaches_nominal:
        words = (
            f"{interval.n} runs cannot give a {100 * level:.3g}% interval; "
            f"about {needed} needed for ±{target_pct:g}%"
        )
    else:
        words = (
            f"±{half_pct:.2g}% after {interval.n} runs, target {target_pct:g}%: "
            f"about {needed} runs needed (raise --max-repeats if it stops first)"
        )
    return PrecisionCheck(
        reached=reached,
        half_width_pct=half_pct,
        target_pct=target_pct,
        level=interval.level,
        n=interval.n,
        repeats_needed=needed,
        words=words,
    )


def _runs_for_level(level: float) -> int:
    """The fewest runs whose median interval reaches ``level`` (6 at 95%)."""
    n = 1
    while median_ranks(n, level)[2] < level - 1e-12:
        n += 1
    return n
