"""The scaling metrics against worked examples computed by hand (see each test's comment)."""

from __future__ import annotations

import numpy as np
import pytest

from cluster_runner.analysis import metrics


def amdahl_times(t1: float, f: float, sizes: list[int]) -> list[float]:
    return [t1 * (f + (1 - f) / n) for n in sizes]


# --- speedup, efficiency, Karp-Flatt -------------------------------------------------------


def test_speedup_and_efficiency_of_a_worked_example():
    # 12 s on one worker, 4 s on four: S = 3, E = 3/4.
    s = metrics.speedup(12.0, 4.0)
    assert s == 3.0
    assert metrics.efficiency(s, 4) == 0.75


def test_efficiency_relative_to_a_base_size_above_one():
    # 10 s on 2 workers, 5 s on 8: S = 2 over a 4-fold increase, E = 2/4.
    assert metrics.efficiency(metrics.speedup(10.0, 5.0), 8, base=2) == 0.5


def test_karp_flatt_of_a_worked_example():
    # S = 1.6 on 2 workers: e = (1/1.6 - 1/2) / (1 - 1/2) = 0.125 / 0.5 = 0.25.
    assert metrics.karp_flatt(1.6, 2) == pytest.approx(0.25)


def test_karp_flatt_is_zero_for_perfect_scaling_and_undefined_at_the_base():
    assert metrics.karp_flatt(8.0, 8) == pytest.approx(0.0)
    assert metrics.karp_flatt(1.0, 1) is None


def test_karp_flatt_recovers_the_serial_fraction_of_an_amdahl_curve_at_every_size():
    # On an exact Amdahl curve the experimentally determined serial fraction is f everywhere.
    times = amdahl_times(10.0, 0.1, [1, 2, 4, 8, 16])
    for n, t in zip([2, 4, 8, 16], times[1:], strict=True):
        assert metrics.karp_flatt(metrics.speedup(times[0], t), n) == pytest.approx(0.1)


# --- Amdahl fit ------------------------------------------------------------------------------


def test_perfect_scaling_fits_serial_fraction_zero():
    sizes = [1, 2, 4, 8]
    fit = metrics.amdahl_fit(sizes, [12.0 / n for n in sizes])
    assert fit.serial_fraction == pytest.approx(0.0, abs=1e-12)
    assert fit.t1 == pytest.approx(12.0)
    assert fit.rms_relative_error == pytest.approx(0.0, abs=1e-12)


def test_a_known_amdahl_curve_is_recovered_and_predicted():
    sizes = [1, 2, 4, 8]
    fit = metrics.amdahl_fit(sizes, amdahl_times(10.0, 0.2, sizes))
    assert fit.serial_fraction == pytest.approx(0.2)
    assert fit.t1 == pytest.approx(10.0)
    # Predicted at 10x the largest size: 1 / (0.2 + 0.8 / 80) = 1 / 0.21.
    assert fit.speedup(80) == pytest.approx(1 / 0.21)
    # And relative to a base of 2: T(2) / T(8) = 6 / 3.
    assert fit.speedup(8, base=2) == pytest.approx(2.0)


def test_amdahl_fit_of_two_points_by_hand():
    # T(1) = 10, T(2) = 6: a + b = 10 and a + b/2 = 6 give b = 8, a = 2, so f = 0.2.
    fit = metrics.amdahl_fit([1, 2], [10.0, 6.0])
    assert fit.serial_fraction == pytest.approx(0.2)


def test_amdahl_fit_without_a_one_worker_point_still_recovers_f():
    sizes = [2, 4, 8]
    assert metrics.amdahl_fit(sizes, amdahl_times(5.0, 0.05, sizes)).serial_fraction == (
        pytest.approx(0.05)
    )


def test_amdahl_fit_of_noisy_times_stays_near_the_true_fraction():
    rng = np.random.default_rng(7)
    sizes = [1, 2, 4, 8, 16]
    noisy = [t * (1 + rng.uniform(-0.01, 0.01)) for t in amdahl_times(10.0, 0.1, sizes)]
    fit = metrics.amdahl_fit(sizes, noisy)
    assert abs(fit.serial_fraction - 0.1) < 0.02
    assert 0 < fit.rms_relative_error < 0.02


def test_superlinear_speedup_fits_as_no_serial_fraction():
    # Faster than ideal (cache effects): the least-squares serial part would be negative.
    fit = metrics.amdahl_fit([1, 2, 4], [10.0, 4.5, 2.0])
    assert fit.serial_fraction == 0.0


def test_slowing_down_with_more_workers_fits_as_all_serial():
    fit = metrics.amdahl_fit([1, 2, 4], [10.0, 11.0, 12.0])
    assert fit.serial_fraction == 1.0


def test_amdahl_fit_needs_two_sizes():
    with pytest.raises(ValueError, match="two distinct sizes"):
        metrics.amdahl_fit([2, 2], [1.0, 1.1])


# --- weak scaling (Gustafson) -----------------------------------------------------------------


def test_scaled_speedup_and_weak_efficiency_of_a_worked_example():
    # 4x the work on 4 workers takes 1.25 s against 1 s: scaled speedup 4 / 1.25 = 3.2.
    assert metrics.scaled_speedup(1.0, 1.25, 4) == pytest.approx(3.2)
    assert metrics.weak_efficiency(1.0, 1.25) == pytest.approx(0.8)


def test_gustafson_fit_recovers_alpha_and_is_zero_for_perfect_weak_scaling():
    sizes = [1, 2, 4, 8]
    curve = [n - 0.3 * (n - 1) for n in sizes]
    fit = metrics.gustafson_fit(sizes, curve)
    assert fit.serial_fraction == pytest.approx(0.3)
    assert fit.scaled_speedup(16) == pytest.approx(16 - 0.3 * 15)
    assert metrics.gustafson_fit(sizes, sizes).serial_fraction == pytest.approx(0.0)


# --- statistics ----------------------------------------------------------------------------


def test_summary_of_three_runs():
    s = metrics.summarize([3.0, 1.0, 2.0])
    assert (s.n, s.median, s.min, s.max) == (3, 2.0, 1.0, 3.0)
    assert 1.0 <= s.ci_low <= 2.0 <= s.ci_high <= 3.0


def test_one_sample_claims_no_spread():
    s = metrics.summarize([0.5])
    assert (s.ci_low, s.median, s.ci_high) == (0.5, 0.5, 0.5)


def test_median_interval_is_reproducible_and_narrows_with_more_samples():
    # Was a test of the percentile bootstrap, which issue 14 replaced by exact intervals.
    rng = np.random.default_rng(1)
    few = rng.normal(10.0, 1.0, size=5)
    many = rng.normal(10.0, 1.0, size=200)
    assert metrics.summarize(few) == metrics.summarize(few)
    few_s, many_s = metrics.summarize(few), metrics.summarize(many)
    assert many_s.ci_high - many_s.ci_low < few_s.ci_high - few_s.ci_low
    assert many_s.ci_low < 10.0 < many_s.ci_high
    assert few_s.ci_level == pytest.approx(0.9375) and many_s.ci_level >= 0.95


def test_ratio_of_medians_and_whether_its_interval_excludes_one():
    # Was a test of the bootstrap ratio_ci; the same claims of its replacement (issue 14).
    from cluster_runner.analysis.intervals import ratio_interval

    # Backend A takes twice as long as B, run after run: a real difference.
    ratio = ratio_interval([2.0, 2.1, 1.9, 2.0], [1.0, 1.05, 0.95, 1.0])
    assert ratio.ratio_of_medians == pytest.approx(2.0)
    assert ratio.excludes(1.0)
    # The same spread of times for both: the interval contains 1.
    ratio = ratio_interval([1.0, 1.2, 0.9, 1.1], [1.1, 0.9, 1.2, 1.0])
    assert ratio.ratio_of_medians == pytest.approx(1.0)
    assert not ratio.excludes(1.0)


def test_karp_flatt_trend_reads_growing_and_constant():
    sizes = [2, 2, 2, 4, 4, 4, 8, 8, 8]
    growing = metrics.karp_flatt_trend(sizes, [0.10, 0.11, 0.09, 0.20, 0.21, 0.19, 0.4, 0.41, 0.39])
    assert growing.kind == "growing" and growing.slope == pytest.approx(0.05)
    assert growing.first == (2.0, 0.10) and growing.last == (8.0, 0.40)
    flat = metrics.karp_flatt_trend(sizes, [0.10, 0.12, 0.09, 0.11, 0.10, 0.12, 0.1, 0.09, 0.11])
    assert flat.kind == "constant" and flat.low < 0 < flat.high
    assert metrics.karp_flatt_trend([2, 2], [0.1, 0.2]).kind == "unknown"


# --- cost and overhead -----------------------------------------------------------------------


def test_cpu_utilisation_of_a_worked_example():
    # 3 CPU seconds over 2 s of wall time on 2 workers: 3 / 4 of the cores were busy.
    assert metrics.cpu_utilisation(3.0, 2.0, 2) == 0.75


def test_per_task_overhead_of_a_worked_example():
    # 2 workers for 1 s = 2 worker-seconds; tasks ran for 1.6 of them; 8 tasks:
    # 0.4 s outside task bodies, 0.05 s per task, a 20% share.
    assert metrics.task_overhead(1.0, 1.6, 8, 2) == pytest.approx(0.05)
    assert metrics.overhead_share(1.0, 1.6, 2) == pytest.approx(0.2)


def test_first_size_above_a_threshold():
    assert metrics.first_above([8, 32, 128, 512], [0.1, 0.3, 0.6, 0.9], 0.5) == 128
    assert metrics.first_above([8, 32], [0.1, 0.3], 0.5) is None
