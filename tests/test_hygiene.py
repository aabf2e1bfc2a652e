"""Measurement hygiene: spread, outliers kept and named, cold first runs, precision targets."""

from __future__ import annotations

import numpy as np
import pytest

from cluster_runner.analysis import hygiene


def test_a_cold_first_run_and_outliers_are_flagged_and_kept():
    times = [0.9, 0.30, 0.31, 0.30, 0.29, 0.55, 0.30, 0.31]
    point = hygiene.check_point(times, label="serial")
    assert point.cold_first and point.first_over_rest == pytest.approx(0.9 / 0.30)
    assert point.outliers == (0, 5)  # runs 1 and 6, by index
    assert point.n == len(times)  # nothing dropped
    assert point.median == pytest.approx(0.305)
    text = " | ".join(point.warnings)
    assert "add --warmup 1" in text and "run(s) 1, 6 are outliers" in text


def test_quiet_well_repeated_points_have_no_warnings():
    rng = np.random.default_rng(0)
    point = hygiene.check_point(2.0 * np.exp(rng.normal(0, 0.01, 10)))
    assert point.warnings == () and point.cv < 0.02 and not point.cold_first


def test_too_few_noisy_short_runs_say_what_to_change():
    point = hygiene.check_point([0.020, 0.031, 0.025], label="local@4")
    text = " | ".join(point.warnings)
    assert "give a 75% interval of the median, not 95%; add --repeat 10" in text
    assert "coefficient of variation" in text
    assert "give chunks more work (e.g. --set n=1e10)" in text


def test_precision_needs_both_the_level_and_the_width():
    tight = [1.0, 1.001, 0.999, 1.0005, 0.9995]
    few = hygiene.precision_reached(tight, 1.0)
    assert not few.reached and few.repeats_needed == 6  # 5 runs give only 93.75%
    enough = hygiene.precision_reached([*tight, 1.0002], 1.0)
    assert enough.reached and enough.half_width_pct <= 1.0 and enough.repeats_needed is None
    wide = hygiene.precision_reached([1.0, 1.2, 0.9, 1.1, 1.0, 0.8, 1.3], 5.0)
    assert not wide.reached and wide.repeats_needed > 7 and "--max-repeats" in wide.words
