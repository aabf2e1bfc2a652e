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
    its coverage. ``exp`` of the interval is the interval of the ratio. Issue 16 (reports over
    100,000 runs): when both samples exceed about 140 runs the exact distribution of ``U``
    (a recurrence of cost ``(mn)^2``) gives way to its normal approximation, whose level is
    then right to within 1e-3, and beyond a million pairs the few ordered differences needed
    are selected (:func:`_pairwise_ranks`) rather than all made and sorted.

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
#: Most pairwise differences a ratio interval sorts in memory (8 MB); beyond, it selects the
#: few it needs (:func:`_pairwise_ranks`): two points of 25,000 runs have 625 million pairs.
MAX_PAIRS = 1_000_000
#: Largest cost (:func:`_exact_cost`) of the exact Mann-Whitney distribution; beyond it (both
#: samples over about 140 runs) the normal approximation stands in for it.
EXACT_COST = 10**8
LARGE_METHOD = "Hodges-Lehmann ratio, Mann-Whitney interval (normal approximation) on the log scale"

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
    # Coverage falls as the lower rank rises: every candidate at once (one scipy call, not one
    # a rank: a point of 25,000 runs took 0.6 s), the same values as rank by rank.
    lowers = np.arange(2, (n + 1) // 2 + 1)
    coverages = np.where(2 * lowers > n, 0.0, 1 - 2 * stats.binom.cdf(lowers - 1, n, 0.5))
    failing = np.flatnonzero(coverages < level)
    last = (failing[0] if failing.size else lowers.size) - 1  # the last rank that reaches it
    if last >= 0:
        lower = int(lowers[last])
        best = (lower, n + 1 - lower, float(coverages[last]))
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
    if _exact_cost(m, n) > EXACT_COST:
        return _normal_shift_rank(m, n, level)
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
    k, coverage = shift_rank(a.size, b.size, level)
    x, y = np.log(a), np.log(b)
    size = a.size * b.size
    middle = [size // 2, size // 2 + 1] if size % 2 == 0 else [size // 2 + 1]
    if size <= MAX_PAIRS:
        diffs = np.sort(np.subtract.outer(x, y).ravel())
        ranked = {r: float(diffs[r - 1]) for r in {k, size + 1 - k, *middle}}
    else:  # the same order statistics, without the m x n differences (issue 16)
        ranked = _pairwise_ranks(x, y, {k, size + 1 - k, *middle})
    median = sum(ranked[r] for r in middle) / len(middle)
    return RatioInterval(
        estimate=float(np.exp(median)),
        ratio_of_medians=float(np.median(a) / np.median(b)),
        low=float(np.exp(ranked[k])),
        high=float(np.exp(ranked[size + 1 - k])),
        level=coverage,
        nominal=level,
        n_numerator=int(a.size),
        n_denominator=int(b.size),
        **({} if _exact_cost(a.size, b.size) <= EXACT_COST else {"method": LARGE_METHOD}),
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


def _exact_cost(m: int, n: int) -> int:
    """About how many additions :func:`_mann_whitney_pmf` makes for ``m`` against ``n``."""
    return (m * (m + 1) // 2) * (n * (n + 1) // 2)


def _normal_shift_rank(m: int, n: int, level: float) -> tuple[int, float]:
    """:func:`shift_rank` by the normal approximation of ``U`` (continuity corrected), for
    samples too large for the exact recurrence: its error in the level is below 1e-3 at the
    sizes it is used for (both samples over about 140 runs; Lehmann, *Nonparametrics*, 1975,
    section 1.3), where the exact one would take minutes and gigabytes. The largest ``k``
    whose coverage ``1 - 2 P(U <= k - 1)`` reaches ``level``, and that coverage.
    """
    mean, sigma = m * n / 2, np.sqrt(m * n * (m + n + 1) / 12)

    def coverage(k: int) -> float:
        return float(1 - 2 * stats.norm.cdf((k - 1 + 0.5 - mean) / sigma))

    k = max(1, int(np.floor(mean + 0.5 + sigma * stats.norm.ppf((1 - level) / 2))))
    while k > 1 and coverage(k) < level - 1e-12:
        k -= 1
    while coverage(k + 1) >= level - 1e-12 and k + 1 <= (m * n + 1) // 2:
        k += 1
    return k, max(coverage(k), 0.0)


def _pairwise_ranks(x: np.ndarray, y: np.ndarray, ranks: set[int]) -> dict[int, float]:
    """The values at 1-based ``ranks`` of the sorted ``m * n`` differences ``x_i - y_j``,
    without making them: for each rank, a binary search over the doubles (in their order as
    64-bit integers) for the smallest value ``v`` with at least ``rank`` differences ``<= v``,
    each count O(m log n) with the differences computed as the sort would have (so the values
    are the same doubles). Memory O(m + n), time O(64 m log n) a rank.
    """
    x, y = np.sort(x), np.sort(y)
    n = y.size

    def count(value: float) -> int:
        # Row i's differences fall as y_j rises, so those <= value are the suffix from the first
        # j where x_i - y_j <= value. searchsorted finds it up to the rounding of x_i - value;
        # a step or two, comparing the differences themselves, makes it exact.
        first = np.searchsorted(y, x - value, side="left")
        for _ in range(64):
            down = (first > 0) & (x - y[np.maximum(first - 1, 0)] <= value)
            up = (first < n) & (x - y[np.minimum(first, n - 1)] > value)
            if not (down.any() or up.any()):
                return int((n - first).sum())
            first = first - down + up
        return _count_exact(x, y, value)

    def ordered(value: float) -> int:  # doubles as integers in the same order
        bits = int(np.float64(value).view(np.int64))
        return bits if bits >= 0 else -(bits & 0x7FFFFFFFFFFFFFFF)

    def double(key: int) -> float:
        bits = key if key >= 0 else (-key) | -0x8000000000000000
        return float(np.int64(bits).view(np.float64))

    lowest, highest = float(x[0] - y[-1]), float(x[-1] - y[0])
    out = {}
    for rank in ranks:
        low, high = ordered(lowest), ordered(highest)  # count(high) >= rank always
        while low < high:
            mid = (low + high) // 2
            if count(double(mid)) >= rank:
                high = mid
            else:
                low = mid + 1
        out[rank] = double(low)
    return out


def _count_exact(x: np.ndarray, y: np.ndarray, value: float) -> int:
    """``#{(i, j): x_i - y_j <= value}`` for sorted ``y``, by a binary search in every row at
    once (the slow path of :func:`_pairwise_ranks`, for long runs of equal times)."""
    n = y.size
    low = np.zeros(x.size, dtype=np.int64)
    high = np.full(x.size, n, dtype=np.int64)
    while True:
        active = low < high
        if not active.any():
            return int((n - low).sum())
        mid = (low + high) // 2
        within = x - y[np.minimum(mid, n - 1)] <= value
        high = np.where(active & within, mid, high)
        low = np.where(active & ~within, mid + 1, low)


def _array(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("expected a non-empty sequence of numbers")
    return x


def level_text(level: float) -> str:
    """A level as a label: ``75%``, ``93.8%``, ``96.9%`` (one decimal, no trailing zero)."""
    text = f"{100 * level:.1f}".rstrip("0").rstrip(".")
    return f"{text}%"


_pct = level_text
