"""Confidence intervals whose stated level is their real coverage, and an honest verdict.

Issue 14: a percentile bootstrap of the median of 3 runs returns ``[min, max]`` and calls it
95%, while its true coverage is ``1 - 2 * 0.5**3 = 75%``; a bootstrap interval of a ratio of
two such medians calls about 10% of pairs drawn from one distribution "a real difference".
Every interval here is *exact and distribution-free*: its coverage follows from counting, not
from an approximation that holds only for many runs, so the level it states is the level it has.

The median
    The interval between two order statistics ``[x_(l), x_(u)]`` covers the population median
    with probability ``P(l <= B < u)`` for ``B ~ Binomial(n, 1/2)``, whatever the distribution
    of the timings (continuous; ties only make it conservative). Hahn & Meeker, *Statistical
    Intervals* (1991), section 5.2; Conover, *Practical Nonparametric Statistics*, 3rd ed.,
    section 3.2. :func:`median_interval` picks the narrowest symmetric pair of ranks whose
    coverage reaches the nominal level, as Hahn & Meeker tabulate (an asymmetric pair one rank
    narrower exists for some n, e.g. ``(1, 7)`` of 8, but would lean towards an arbitrary
    side; symmetric ranks treat a slow tail and a fast one alike); when ``n`` is
    too small for it (``n = 3`` gives at most 75%, ``n = 5`` at most 93.75%) it returns
    ``[min, max]`` labelled with the level achieved, never with the nominal one.

A ratio of times (a speedup ``T(base) / T(n)``, or one backend over another)
    Timing noise is multiplicative, so on the log scale two configurations differ by a shift.
    The Hodges-Lehmann estimate of that shift is the median of all ``m * n`` pairwise
    differences ``log a_i - log b_j``, and the interval between two of those differences
    ordered (Moses; Bauer, JASA 67(339), 1972) inverts the exact Mann-Whitney test: its
    coverage is ``1 - 2 P(U < k)`` under the null distribution of ``U``, exact for any
    continuous distribution when one configuration's times are a multiple of the other's.
    Chosen over a BCa or studentised bootstrap because those are only asymptotically right and
    undercover at the 3-10 repeats people run; chosen over combining the two medians' intervals
    because that product bound is conservative by an unknown amount, so its label would not be
    its coverage. ``exp`` of the interval is the interval of the ratio.

"Is A different from B"
    :func:`compare` answers "faster", "slower" or "cannot tell apart" from the same interval at
    a level of at least ``1 - alpha``: it says "faster" exactly when the two-sided exact
    Mann-Whitney test rejects at ``alpha``, so when A and B come from one distribution it is
    wrong at most ``alpha`` of the time at every repeat count. With 3 runs against 3 the test
    can never reach 5% (its smallest p is 0.1), so the answer is "cannot tell apart" and the
    words say how many runs would be needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import stats

#: The level every interval aims at; the one achieved is stated next to each interval.
NOMINAL = 0.95
#: The false-difference rate :func:`compare` allows.
ALPHA = 0.05

Verdict = Literal["faster", "slower", "cannot tell apart"]


@dataclass(frozen=True)
class MedianInterval:
    """The median of a sample and its exact order-statistic confidence interval."""

    n: int
    median: float
    low: float  # x_(lower_rank)
    high: float  # x_(upper_rank)
    level: float  # the coverage achieved: exact, and below `nominal` when n is too small
    nominal: float  # the level asked for
    lower_rank: int  # 1-based ranks of the order statistics
    upper_rank: int
    method: str = "order statistics (binomial, distribution-free)"

    @property
    def reaches_nominal(self) -> bool:
        """Whether the interval's coverage is at least the level asked for."""
        return self.level >= self.nominal - 1e-12

    @property
    def half_width(self) -> float:
        """The larger distance from the median to an end of the interval."""
        return max(self.median - self.low, self.high - self.median)

    def describe(self, unit: str = "s") -> str:
        """The interval in words, with the level it really has."""
        if self.n == 1:
            return f"{self.median:.4g} {unit} (1 run: no interval)"
        text = f"{self.median:.4g} {unit} ({_pct(self.level)} CI {self.low:.4g}-{self.high:.4g})"
        if not self.reaches_nominal:
            text += f"; {self.n} runs cannot give {_pct(self.nominal)}"
        return text


@dataclass(frozen=True)
class RatioInterval:
    """A ratio of two samples' typical times, ``A / B``, and its exact rank interval."""

    estimate: float  # Hodges-Lehmann: exp(median of log a_i - log b_j)
    ratio_of_medians: float  # median(A) / median(B), for comparison with older reports
    low: float
    high: float
    level: float  # the coverage achieved
    nominal: float
    n_numerator: int
    n_denominator: int
    method: str = "Hodges-Lehmann ratio, exact Mann-Whitney interval on the log scale"

    @property
    def reaches_nominal(self) -> bool:
        """Whether the interval's coverage is at least the level asked for."""
        return self.level >= self.nominal - 1e-12

    def excludes(self, value: float = 1.0) -> bool:
        """Whether the interval lies wholly on one side of ``value``."""
        return value < self.low or value > self.high

    def describe(self) -> str:
        """The ratio in words, with the level it really has."""
        return f"{self.estimate:.3g} ({_pct(self.level)} CI {self.low:.3g}-{self.high:.3g})"


@dataclass(frozen=True)
class Comparison:
    """Whether A's times differ from B's: a verdict a false positive of which is at most alpha."""

    verdict: Verdict  # "faster": A takes less time than B
    ratio: RatioInterval  # A / B at a level of at least 1 - alpha, when reachable
    p_value: float  # two-sided Mann-Whitney (exact without ties)
    alpha: float
    min_repeats: int  # runs per side needed before a difference can be shown at alpha
    words: str


def median_ranks(n: int, level: float = NOMINAL) -> tuple[int, int, float]:
    """The 1-based ranks ``(l, u)`` of the narrowest median interval and its exact coverage.

    Coverage of ``[x_(l), x_(u)]`` is ``P(l <= B <= u - 1)``, ``B ~ Binomial(n, 1/2)``. The
    largest symmetric ``l`` (``u = n + 1 - l``, see the module docstring) whose coverage
    reaches ``level`` is chosen; when
    even ``[x_(1), x_(n)]`` falls short, those are returned with the coverage they have.
    """
    if n < 1:
        raise ValueError("a median interval needs at least one sample")
    best = (1, n, _median_coverage(n, 1))
    for lower in range(2, (n + 1) // 2 + 1):
        coverage = _median_coverage(n, lower)
        if coverage < level:
            break
        best = (lower, n + 1 - lower, coverage)
    return best


def median_interval(samples: Sequence[float], level: float = NOMINAL) -> MedianInterval:
    """The median of ``samples`` with an exact distribution-free confidence interval.

    The level of the result is the coverage achieved (see :func:`median_ranks`): 0.75 for 3
    runs, 0.9375 for 5, 0.969 for 6 at a nominal 0.95. One run gives the run itself, level 0.
    """
    x = np.sort(_array(samples))
    lower, upper, coverage = median_ranks(x.size, level)
    return MedianInterval(
        n=int(x.size),
        median=float(np.median(x)),
        low=float(x[lower - 1]),
        high=float(x[upper - 1]),
        level=coverage,
        nominal=level,
        lower_rank=lower,
        upper_rank=upper,
    )


def shift_rank(m: int, n: int, level: float = NOMINAL) -> tuple[int, float]:
    """The rank ``k`` of the pairwise-difference interval ``[d_(k), d_(mn+1-k)]`` and its level.

    Coverage is ``1 - 2 P(U <= k - 1)`` for the Mann-Whitney statistic ``U`` of ``m`` against
    ``n`` observations with no ties. The largest ``k`` whose coverage reaches ``level`` is
    chosen; when ``k = 1`` (the full range of differences) falls short, it is returned with the
    coverage it has.
    """
    if m < 1 or n < 1:
        raise ValueError("a ratio interval needs at least one sample on each side")
    cdf = np.cumsum(_mann_whitney_pmf(min(m, n), max(m, n)))
    coverage = 1 - 2 * cdf[: (m * n + 1) // 2]  # coverage for k = 1, 2, ...
    ok = np.flatnonzero(coverage >= level - 1e-12)
    k = int(ok[-1]) + 1 if ok.size else 1
    return k, float(max(coverage[k - 1], 0.0))


def ratio_interval(
    numerator: Sequence[float], denominator: Sequence[float], level: float = NOMINAL
) -> RatioInterval:
    """``A / B`` for times ``A`` (numerator) and ``B``, with an exact interval of that ratio.

    A speedup is ``ratio_interval(times_at_base, times_at_n)``. See the module docstring for
    why a Hodges-Lehmann ratio with a Mann-Whitney interval and not a bootstrap.
    """
    a, b = _array(numerator), _array(denominator)
    if np.any(a <= 0) or np.any(b <= 0):
        raise ValueError("times must be positive for a ratio")
    diffs = np.sort(np.subtract.outer(np.log(a), np.log(b)).ravel())
    k, coverage = shift_rank(a.size, b.size, level)
    return RatioInterval(
        estimate=float(np.exp(np.median(diffs))),
        ratio_of_medians=float(np.median(a) / np.median(b)),
        low=float(np.exp(diffs[k - 1])),
        high=float(np.exp(diffs[diffs.size - k])),
        level=coverage,
        nominal=level,
        n_numerator=int(a.size),
        n_denominator=int(b.size),
    )


def compare(
    a: Sequence[float],
    b: Sequence[float],
    *,
    alpha: float = ALPHA,
    names: tuple[str, str] = ("A", "B"),
) -> Comparison:
    """Whether times ``a`` are faster than, slower than, or indistinguishable from ``b``.

    "faster" or "slower" only when the interval of ``a / b`` at a level of at least
    ``1 - alpha`` excludes 1: the dual of the exact two-sided Mann-Whitney test at ``alpha``.
    """
    x, y = _array(a), _array(b)
    ratio = ratio_interval(x, y, 1 - alpha)
    p_value = float(stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)
    need = min_repeats(alpha)
    name_a, name_b = names
    if ratio.reaches_nominal and ratio.high < 1:
        verdict: Verdict = "faster"
        words = f"{name_a} is faster than {name_b}: time ratio {ratio.describe()}"
    elif ratio.reaches_nominal and ratio.low > 1:
        verdict = "slower"
        words = f"{name_a} is slower than {name_b}: time ratio {ratio.describe()}"
    else:
        verdict = "cannot tell apart"
        words = f"cannot tell {name_a} and {name_b} apart: time ratio {ratio.describe()}"
        if not ratio.reaches_nominal:
            words += (
                f"; {x.size} against {y.size} runs can never show a difference at "
                f"{_pct(alpha)}: it needs at least {need} runs each (add --repeat 10)"
            )
    return Comparison(verdict, ratio, p_value, alpha, need, words)


def min_repeats(alpha: float = ALPHA) -> int:
    """The fewest runs per side (equal on both) with which a difference can be shown at alpha."""
    n = 1
    while shift_rank(n, n, 1 - alpha)[1] < 1 - alpha - 1e-12:
        n += 1
    return n


def _median_coverage(n: int, lower: int) -> float:
    """``P(lower <= B <= n - lower)`` for ``B ~ Binomial(n, 1/2)``: symmetric ranks."""
    if 2 * lower > n:
        return 0.0  # the interval is the single middle order statistic
    return float(1 - 2 * stats.binom.cdf(lower - 1, n, 0.5))


@lru_cache(maxsize=512)
def _mann_whitney_pmf(m: int, n: int) -> np.ndarray:
    """Null distribution of ``U = #{a_i > b_j}`` for ``m`` against ``n`` untied observations.

    The recurrence conditions on which sample holds the largest of all ``i + j`` values:
    ``P[i,j](u) = i/(i+j) P[i-1,j](u-j) + j/(i+j) P[i,j-1](u)`` (Mann & Whitney, 1947),
    computed on probabilities, so it neither overflows nor needs big integers.
    """
    previous = [np.ones(1)] * (n + 1)  # i = 0: U = 0 with certainty
    for i in range(1, m + 1):
        row = [np.ones(1)]
        for j in range(1, n + 1):
            pmf = np.zeros(i * j + 1)
            above = previous[j]
            pmf[j : j + above.size] += i / (i + j) * above
            left = row[j - 1]
            pmf[: left.size] += j / (i + j) * left
            row.append(pmf)
        previous = row
    pmf = previous[n]
    pmf.flags.writeable = False
    return pmf


def _array(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("expected a non-empty sequence of numbers")
    return x


def _pct(level: float) -> str:
    text = f"{100 * level:.1f}".rstrip("0").rstrip(".")
    return f"{text}%"
