"""Scaling laws against published fits, and model choice against data made from each law.

Published data and coefficients (issue 14 asks for at least one published data set):

- SPEC SDM91 on a Sun SPARCcenter 2000 (16 CPUs, October 1994), from Gunther, *Guerrilla
  Capacity Planning* (Springer, 2007), as shipped in the R ``usl`` package (``data/specsdm91``,
  described in ``man/specsdm91.Rd``; the values are Gunther's table). Published fits, R ``usl``
  package by Stefan Moeding (github.com/smoeding/usl): its README's ``nls`` summary gives
  alpha 0.0277285 (SE 0.0091217), beta 0.0001044 (SE 0.0000199), gamma 89.9952330 (SE
  14.2134894); its earlier README, normalised by X(1) = 64.9 with Gunther's quadratic
  method, gives sigma 1.704689e-02 and kappa 7.892498e-05.
- The ray tracer on an SGI Origin 2000 (``data/raytracer``, Gunther 2007): the package's
  ``tests/confint.Rout.save`` gives alpha 0.0578, beta 0.0000, gamma 21.8488.
- ``tests/coef.Rout.save``: six points made from sigma = kappa = 0.02, fitted back to 0.02.
"""

from __future__ import annotations

import numpy as np
import pytest

from cluster_runner.analysis import models

SPEC_LOAD = [1, 18, 36, 72, 108, 144, 216]
SPEC_TPUT = [64.9, 995.9, 1652.4, 1853.2, 1828.9, 1775.0, 1702.2]
RAY_CPUS = [1, 4, 8, 12, 16, 20, 24, 28, 32, 48, 64]
RAY_TPUT = [20, 78, 130, 170, 190, 200, 210, 230, 260, 280, 310]


def test_usl_reproduces_the_published_specsdm91_fit_and_its_standard_errors():
    fit = models.fit_law("usl", SPEC_LOAD, SPEC_TPUT, residuals="absolute")
    published = {"gamma": (89.9952330, 14.2134894), "sigma": (0.0277285, 0.0091217)}
    published["kappa"] = (0.0001044, 0.0000199)
    for c in fit.coefficients:
        value, stderr = published[c.name]
        assert c.value == pytest.approx(value, rel=2e-3), c
        assert c.stderr == pytest.approx(stderr, rel=2e-2), c
        assert c.low < c.value < c.high
    # 4 residual degrees of freedom, residual standard error 82.8 as published.
    assert np.sqrt(fit.rss / (fit.n_obs - 3)) == pytest.approx(82.8, abs=0.1)
    assert fit.peak == pytest.approx(np.sqrt((1 - 0.0277285) / 0.0001044), rel=5e-3)
    assert "peaks at N*=96" in fit.words and "retrograde" in fit.words


def test_gunthers_normalised_quadratic_start_matches_the_published_sigma_and_kappa():
    # The package's first method: C(N) = X(N) / X(1), then N/C - 1 = sigma (N-1) + kappa N(N-1)
    # by linear least squares (Gunther 2007, section 5.2.3). It is this module's starting point.
    gamma, sigma, kappa = models._start("usl", np.array(SPEC_LOAD, float), np.array(SPEC_TPUT))
    assert gamma == pytest.approx(64.9)
    assert sigma == pytest.approx(1.704689e-02, rel=1e-5)
    assert kappa == pytest.approx(7.892498e-05, rel=1e-5)


def test_usl_reproduces_the_published_raytracer_fit():
    fit = models.fit_law("usl", RAY_CPUS, RAY_TPUT, residuals="absolute")
    assert fit.coef("gamma") == pytest.approx(21.8488, rel=1e-4)
    assert fit.coef("sigma") == pytest.approx(0.0578, abs=5e-5)
    assert fit.coef("kappa") == pytest.approx(0.0, abs=1e-9)
    assert fit.peak is None and "no peak" in fit.words


def test_usl_recovers_the_coefficients_of_the_packages_coef_test():
    load = [1, 2, 4, 6, 8, 10]
    tput = [1, 1.8868, 3.0769, 3.5294, 3.5398, 3.3557]
    for residuals in ("absolute", "relative"):
        fit = models.fit_law("usl", load, tput, residuals=residuals)
        assert fit.coef("sigma") == pytest.approx(0.02, abs=2e-4)
        assert fit.coef("kappa") == pytest.approx(0.02, abs=2e-4)
        assert fit.peak == pytest.approx(np.sqrt(0.98 / 0.02), rel=1e-2)  # 7: within the range
        assert "falls beyond (retrograde)" in fit.words


SIZES = np.repeat([1, 2, 4, 8, 16, 32], 5)  # a sweep of 6 sizes, 5 repeats each
TRUTH = {"linear": (1.0,), "amdahl": (1.0, 0.1), "usl": (1.0, 0.05, 0.002)}


@pytest.mark.parametrize("model", list(TRUTH))
def test_model_choice_picks_the_law_the_data_came_from(model):
    rng = np.random.default_rng(7)
    picks = []
    for _ in range(10):
        throughput = models._law(model)(SIZES.astype(float), *TRUTH[model])
        times = np.exp(rng.normal(0, 0.03, SIZES.size)) / throughput  # 3% multiplicative noise
        picks.append(models.choose_model(SIZES, times).best)
    assert picks.count(model) >= 8, picks


def test_usl_choice_explains_itself_in_words():
    throughput = models._law("usl")(SIZES.astype(float), 1.0, 0.05, 0.002)
    times = np.exp(np.random.default_rng(8).normal(0, 0.02, SIZES.size)) / throughput
    choice = models.choose_model(SIZES, times)
    assert choice.best == "usl" and choice.criterion == "AICc"
    assert choice.words.startswith("USL fits best (AICc ")
    assert "lower than Amdahl" in choice.words and "peaks at N*=22" in choice.words
    assert dict(choice.delta_aicc)["usl"] == 0.0
    usl = choice.fit("usl")
    assert usl.can_extrapolate and not usl.exactly_determined
    for c in usl.coefficients:
        assert c.low is not None and c.low <= c.value <= c.high


def test_amdahl_recovers_a_known_serial_fraction_with_an_interval_around_it():
    rng = np.random.default_rng(9)
    sizes = np.repeat([1, 2, 3, 4, 6, 8], 6)
    times = 10 * (0.15 + 0.85 / sizes) * np.exp(rng.normal(0, 0.02, sizes.size))
    fit = models.fit_law("amdahl", sizes, 1 / times)
    sigma = next(c for c in fit.coefficients if c.name == "sigma")
    assert sigma.value == pytest.approx(0.15, abs=0.02)
    assert sigma.low < 0.15 < sigma.high
    assert fit.coef("gamma") == pytest.approx(0.1, rel=0.03)  # 1 / T(1)


def test_two_sizes_are_exactly_determined_and_never_extrapolated():
    # The case: a 2-point Amdahl fit reported "rms error 0.0%" and was extrapolated.
    choice = models.choose_model([1, 1, 1, 2, 2, 2], [10, 10.2, 9.9, 6, 6.1, 5.9])
    amdahl = choice.fit("amdahl")
    assert amdahl.exactly_determined and not amdahl.can_extrapolate
    assert not amdahl.in_range(20) and amdahl.in_range(1.5)
    assert "exactly determined" in amdahl.words and "not extrapolated" in amdahl.words
    assert choice.fit("usl") is None and "Not fitted" in choice.words and "USL" in choice.words
    assert "limited to" not in choice.words  # no asymptote claimed from two sizes


def test_four_sizes_fit_the_usl_but_do_not_extrapolate_it():
    sizes = np.repeat([1, 2, 3, 4], 5)
    times = 4 * (0.1 + 0.9 / sizes) * np.exp(np.random.default_rng(10).normal(0, 0.02, 20))
    usl = models.fit_law("usl", sizes, 1 / times)
    assert not usl.exactly_determined and not usl.can_extrapolate  # 3 coefficients + 2 > 4
    assert models.fit_law("amdahl", sizes, 1 / times).can_extrapolate


def test_one_size_fits_nothing_and_says_why():
    with pytest.raises(ValueError, match="distinct sizes"):
        models.fit_law("amdahl", [2, 2, 2], [1.0, 1.1, 0.9])
    choice = models.choose_model([2, 2, 2], [1.0, 1.1, 0.9])
    assert [f.model for f in choice.fits] == ["linear"]


def test_gustafson_recovers_a_known_weak_scaling_fraction():
    rng = np.random.default_rng(11)
    sizes = np.repeat([1, 2, 4, 8], 5)
    r = sizes.astype(float)
    scaled = r - 0.2 * (r - 1)
    times = r / scaled * np.exp(rng.normal(0, 0.01, sizes.size))
    alpha = models.gustafson_fit(sizes, times)
    assert alpha.value == pytest.approx(0.2, abs=0.02)
    assert alpha.low < 0.2 < alpha.high
