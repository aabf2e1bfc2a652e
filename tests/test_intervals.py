"""Intervals whose stated level is their coverage, pinned by simulation (issue 14).

Synthetic timings from known noise: log-normal (10% spread) with 5% of runs 1.5-3x slower, as
a shared machine produces. At every repeat count from 1 to 30, thousands of samples measure how
often each interval covers the true value; the measured rate must be the stated level within
Monte Carlo error (the intervals are exact, so "close" is a few standard errors), and the
verdict's false "real difference" rate must be at most 5%. The simulations are vectorised over
samples with the same rank rules the public functions use; a few draws check that the public
functions agree with them. ``scripts/coverage_table.py`` prints the same figures as a table.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats

from cluster_runner.analysis import intervals

SIGMA = 0.10  # log-scale spread of ordinary runs
OUTLIER_SHARE = 0.05
OUTLIER_SLOWDOWN = (1.5, 3.0)
REPEATS = range(1, 31)
DRAWS = 4000  # Monte Carlo standard error at 95%: 0.34 points
SLACK = 0.02  # coverage may fall below the stated level by at most this (about 6 SE)


def draw(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    """Timings: scale * lognormal(0, SIGMA), 5% of them slowed by a factor in [1.5, 3]."""
    x = scale * np.exp(rng.normal(0.0, SIGMA, shape))
    slow = rng.random(shape) < OUTLIER_SHARE
    return np.where(slow, x * rng.uniform(*OUTLIER_SLOWDOWN, shape), x)


def true_median() -> float:
    """The population median of :func:`draw` (scale 1), solved from its mixture CDF."""
    u = np.linspace(*OUTLIER_SLOWDOWN, 4001)

    def cdf(x: float) -> float:
        plain = stats.norm.cdf(np.log(x) / SIGMA)
        slowed = np.mean(stats.norm.cdf((np.log(x) - np.log(u)) / SIGMA))
        return (1 - OUTLIER_SHARE) * plain + OUTLIER_SHARE * slowed - 0.5

    return optimize.brentq(cdf, 0.5, 2.0)


def test_the_median_interval_covers_at_its_stated_level_at_every_repeat_count():
    rng = np.random.default_rng(1)
    median = true_median()
    for n in REPEATS:
        lower, upper, level = intervals.median_ranks(n)
        x = np.sort(draw(rng, (DRAWS, n)), axis=1)
        covered = np.mean((x[:, lower - 1] <= median) & (median <= x[:, upper - 1]))
        assert covered >= level - SLACK, (n, level, covered)
        assert covered <= level + SLACK, (n, level, covered)  # exact, not just conservative
        # The public function picks the same order statistics.
        public = intervals.median_interval(x[0, ::-1])
        assert (public.low, public.high, public.level) == (x[0, lower - 1], x[0, upper - 1], level)


def test_few_repeats_state_the_level_they_reach_never_the_nominal_one():
    three = intervals.median_interval([3.0, 1.0, 2.0])
    assert (three.low, three.high, three.level) == (1.0, 3.0, 0.75)
    assert not three.reaches_nominal
    assert "75%" in three.describe() and "cannot give 95%" in three.describe()
    assert intervals.median_interval([1.0, 2.0, 3.0, 4.0, 5.0]).level == pytest.approx(0.9375)
    six = intervals.median_interval(np.arange(6.0))
    assert six.reaches_nominal and six.level == pytest.approx(1 - 2 / 64)
    one = intervals.median_interval([2.0])
    assert (one.low, one.high, one.level) == (2.0, 2.0, 0.0)


def test_the_ratio_interval_covers_at_its_stated_level_at_every_repeat_count():
    rng = np.random.default_rng(2)
    ratio = 1.3  # A is 1.3x B's scale: every quantile, so the median, is 1.3x
    pairs = [(n, n) for n in range(1, 21)] + [(25, 25), (30, 30), (3, 10), (10, 3), (5, 12)]
    for m, n in pairs:
        k, level = intervals.shift_rank(m, n)
        a, b = draw(rng, (2000, m, 1), ratio), draw(rng, (2000, 1, n))
        d = np.sort(np.log(a / b).reshape(2000, m * n), axis=1)
        covered = np.mean((d[:, k - 1] <= np.log(ratio)) & (np.log(ratio) <= d[:, m * n - k]))
        assert covered >= level - SLACK - 0.01, (m, n, level, covered)  # 2000 draws: SE 0.5
        assert covered <= level + SLACK + 0.01, (m, n, level, covered)
        public = intervals.ratio_interval(a[0, :, 0], b[0, 0, :])
        assert public.level == level
        assert public.low == pytest.approx(np.exp(d[0, k - 1]))
        assert public.high == pytest.approx(np.exp(d[0, m * n - k]))


def test_no_false_difference_above_5_percent_at_any_repeat_count():
    rng = np.random.default_rng(3)
    for n in REPEATS:
        k, level = intervals.shift_rank(n, n, 1 - intervals.ALPHA)
        a, b = draw(rng, (DRAWS, n, 1)), draw(rng, (DRAWS, 1, n))
        d = np.sort(np.log(a / b).reshape(DRAWS, n * n), axis=1)
        differs = (d[:, k - 1] > 0) | (d[:, n * n - k] < 0)
        reachable = level >= 1 - intervals.ALPHA
        rate = np.mean(differs) if reachable else 0.0
        assert rate <= intervals.ALPHA + 0.01, (n, rate)  # 0.01: about 3 Monte Carlo SE
        # The public verdict agrees with the vectorised rule on the first few draws.
        for i in range(3):
            verdict = intervals.compare(a[i, :, 0], b[i, 0, :]).verdict
            assert (verdict != "cannot tell apart") == bool(differs[i] and reachable), n


def test_three_against_three_can_never_show_a_difference():
    # Mann-Whitney's smallest two-sided p for 3 vs 3 is 2/20 = 0.1: even complete separation
    # is "cannot tell apart", and the words say how many runs would be needed.
    result = intervals.compare([1.0, 1.01, 1.02], [2.0, 2.01, 2.02])
    assert result.verdict == "cannot tell apart"
    assert result.p_value == pytest.approx(0.1)
    assert result.min_repeats == 4
    assert "at least 4 runs" in result.words and "--repeat" in result.words


def test_a_real_20_percent_difference_at_10_repeats_is_found_most_of_the_time():
    rng = np.random.default_rng(4)
    verdicts = [
        intervals.compare(draw(rng, (10,)), draw(rng, (10,), 1.2)).verdict for _ in range(300)
    ]
    assert np.mean([v == "faster" for v in verdicts]) > 0.8
    assert "slower" not in verdicts


def test_speedup_direction_and_words():
    base, four = [8.0, 8.2, 7.9, 8.1, 8.05], [2.0, 2.1, 1.95, 2.05, 2.02]
    speedup = intervals.ratio_interval(base, four)
    assert speedup.low < speedup.estimate < speedup.high
    assert 3.8 < speedup.estimate < 4.2 and speedup.excludes(1.0)
    slower = intervals.compare(base, four, names=("serial", "local@4"))
    assert slower.verdict == "slower"
    assert slower.words.startswith("serial is slower than local@4")


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        intervals.median_interval([])
    with pytest.raises(ValueError):
        intervals.ratio_interval([1.0, -1.0], [1.0])
