"""Scaling models fitted to every run, with intervals on every coefficient, chosen by AICc.

Strong scaling (the same work at every size ``N``) is modelled on throughput ``X = 1 / T``:

- linear: ``X(N) = gamma * N`` (perfect scaling; 1 coefficient);
- Amdahl: ``X(N) = gamma * N / (1 + sigma (N - 1))``, the same curve as
  ``T(N) = T1 (f + (1 - f) / N)`` with serial fraction ``f = sigma`` (2 coefficients);
- Gunther's Universal Scalability Law (USL): ``X(N) = gamma * N / (1 + sigma (N - 1) +
  kappa N (N - 1))``, contention ``sigma`` and coherency ``kappa`` (3 coefficients). With
  ``kappa > 0`` throughput peaks at ``N* = sqrt((1 - sigma) / kappa)`` and falls beyond it (the
  retrograde region). Gunther, *Guerrilla Capacity Planning* (Springer, 2007), chapters 4-6.

``gamma`` is fitted too (as the R ``usl`` package's ``nls`` method does), so no 1-worker point
is needed. Fits are nonlinear least squares (``scipy.optimize.least_squares``, coefficients
kept in their physical ranges) over *every run*, not over medians: the repeats estimate the
noise, so the standard errors from the Jacobian (``s^2 (J'J)^-1``) and the Student-t intervals
on each coefficient mean something even with few sizes. Timing noise is multiplicative, so by
default the residuals are ``log(fit) - log(measured)``; ``residuals="absolute"`` fits the raw
throughput as the ``usl`` package does (the tests reproduce its published coefficients so).

Model choice: the small-sample corrected Akaike information criterion, AICc (Hurvich & Tsai,
Biometrika 76(2), 1989; Burnham & Anderson, *Model Selection and Multimodel Inference*, 2002),
counting the noise variance as a parameter. It is chosen over leave-one-out cross-validation
because a sweep has 3-6 sizes: leaving a size out leaves too few to fit the USL at all, and
AICc's penalty is what keeps a 3-coefficient curve from winning by bending through the noise.
Differences below 2 are reported as "about as good", and the simpler model is then preferred.

Too few sizes: a model with as many coefficients as distinct sizes passes through every median
whatever the law; its error says nothing and it is reported as *exactly determined*. A model is
extrapolated beyond the sizes measured only with at least ``coefficients + 2`` distinct sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import optimize, stats

Residuals = Literal["relative", "absolute"]
#: Level of every coefficient interval.
LEVEL = 0.95
#: AICc differences below this are "about as good" (Burnham & Anderson, section 2.6).
AICC_TIE = 2.0
#: A fitted kappa at or below this is zero (the optimiser stops a rounding error above its bound).
KAPPA_ZERO = 1e-12


@dataclass(frozen=True)
class Coefficient:
    """One fitted coefficient with its standard error and Student-t interval."""

    name: str
    value: float
    stderr: float | None  # None when there are no residual degrees of freedom
    low: float | None
    high: float | None
    level: float


@dataclass(frozen=True)
class ModelFit:
    """One scaling law fitted to ``(size, throughput)`` observations."""

    model: str  # "linear", "amdahl" or "usl"
    coefficients: tuple[Coefficient, ...]
    n_obs: int  # runs fitted
    n_sizes: int  # distinct sizes among them
    size_range: tuple[float, float]
    rss: float  # residual sum of squares, on the residual scale fitted
    aicc: float | None  # None when there are too few runs for it
    residuals: Residuals
    exactly_determined: bool  # as many coefficients as distinct sizes
    can_extrapolate: bool  # at least coefficients + 2 distinct sizes
    peak: float | None  # USL N* = sqrt((1 - sigma) / kappa); None when kappa <= 0
    words: str
    covariance: tuple[tuple[float, ...], ...] | None = None  # of the coefficients; None: no dof
    dof: int = 0  # residual degrees of freedom (runs - coefficients)
    peak_low: float | None = None  # interval of N* (delta method on log N*, level LEVEL)
    peak_high: float | None = None  # None: unbounded (kappa's interval reaches 0)

    def coef(self, name: str) -> float:
        """The value of coefficient ``name``."""
        return next(c.value for c in self.coefficients if c.name == name)

    def throughput(self, n: float | np.ndarray) -> float | np.ndarray:
        """The fitted throughput at size ``n`` (runs per second when fitted on ``1 / T``)."""
        return _law(self.model)(np.asarray(n, dtype=float), *(c.value for c in self.coefficients))

    def speedup(self, n: float, base: float = 1) -> float:
        """The fitted speedup ``X(n) / X(base)``."""
        return float(self.throughput(n) / self.throughput(base))

    def band(self, n: float | np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
        """A pointwise confidence band of the fitted throughput at ``n``: ``(low, high)``.

        Delta method with the coefficients' covariance, on the log scale when the residuals
        were relative (so the band stays positive), with Student-t quantiles on :attr:`dof`.
        Raises ``ValueError`` when there is no covariance: an exactly determined fit, or one
        without residual degrees of freedom, has no honest band.
        """
        if self.covariance is None or self.dof < 1:
            raise ValueError("no band: the fit has no residual degrees of freedom")
        n = np.atleast_1d(np.asarray(n, dtype=float))
        theta = np.array([c.value for c in self.coefficients])
        law = _law(self.model)
        log = self.residuals == "relative"

        def value(t: np.ndarray) -> np.ndarray:
            x = law(n, *t)
            return np.log(np.maximum(x, 1e-300)) if log else x

        centre = value(theta)
        grad = np.empty((n.size, theta.size))
        for i in range(theta.size):  # central differences, one-sided at the bound 0
            up, down = theta.copy(), theta.copy()
            up[i] += 1e-6 * max(abs(theta[i]), 1e-6)
            down[i] = max(2 * theta[i] - up[i], 0.0)
            grad[:, i] = (value(up) - value(down)) / (up[i] - down[i])
        variance = np.einsum("ij,jk,ik->i", grad, np.array(self.covariance), grad)
        half = float(stats.t.ppf(0.5 + level / 2, self.dof)) * np.sqrt(np.maximum(variance, 0))
        low, high = centre - half, centre + half
        return (np.exp(low), np.exp(high)) if log else (np.maximum(low, 0.0), high)

    def in_range(self, n: float) -> bool:
        """Whether a prediction at ``n`` is an interpolation, or an allowed extrapolation."""
        low, high = self.size_range
        return self.can_extrapolate or low <= n <= high


@dataclass(frozen=True)
class ModelChoice:
    """The fits of every law the data allow and the one AICc prefers, in words."""

    best: str | None  # None when no law could be fitted
    fits: tuple[ModelFit, ...]
    criterion: str  # "AICc"
    delta_aicc: tuple[tuple[str, float], ...]  # each eligible model's AICc minus the best's
    words: str

    def fit(self, model: str) -> ModelFit | None:
        """The fit of ``model``, or None when it was not fitted."""
        return next((f for f in self.fits if f.model == model), None)


_NAMES = {"linear": ("gamma",), "amdahl": ("gamma", "sigma"), "usl": ("gamma", "sigma", "kappa")}
_TITLES = {"linear": "linear scaling", "amdahl": "Amdahl", "usl": "USL"}


def fit_law(
    model: str,
    sizes: Sequence[float],
    throughput: Sequence[float],
    *,
    residuals: Residuals = "relative",
    level: float = LEVEL,
) -> ModelFit:
    """Fit one law (``"linear"``, ``"amdahl"`` or ``"usl"``) to every observation.

    ``sizes`` and ``throughput`` are one entry per run (sizes repeat). Raises ``ValueError``
    when there are fewer distinct sizes than coefficients: the law is then undetermined.
    """
    n, x = _arrays(sizes, throughput)
    names = _NAMES[model]
    p = len(names)
    n_sizes = int(np.unique(n).size)
    if n_sizes < p:
        raise ValueError(
            f"{_TITLES[model]} has {p} coefficients and needs at least {p} distinct sizes; "
            f"measured {n_sizes}"
        )
    law = _law(model)
    start = _start(model, n, x)
    upper = [np.inf, 1.0, np.inf][:p]
    result = optimize.least_squares(
        lambda theta: _residual(law(n, *theta), x, residuals),
        start,
        bounds=([0.0] * p, upper),
        x_scale="jac",
        method="trf",
        xtol=1e-12,
        ftol=1e-12,
        gtol=1e-12,
    )
    theta = result.x.copy()
    # A coefficient a rounding error above its bound of 0 is 0 (a kappa of 1e-17 is no
    # coherency cost, and must print as 0, not as a number).
    theta[1:][theta[1:] <= KAPPA_ZERO] = 0.0
    rss = float(np.sum(result.fun**2))
    dof = n.size - p
    coefficients = _coefficients(names, theta, result.jac, rss, dof, level, upper)
    covariance = None
    if dof >= 1 and n_sizes > p:
        cov = np.linalg.pinv(result.jac.T @ result.jac) * (rss / dof)
        covariance = tuple(tuple(float(v) for v in row) for row in cov)
    k = p + 1  # coefficients and the noise variance
    aicc = None
    if n.size - k - 1 > 0 and rss > 0:
        aicc = n.size * math.log(rss / n.size) + 2 * k + 2 * k * (k + 1) / (n.size - k - 1)
    peak = peak_low = peak_high = None
    if model == "usl" and theta[2] > KAPPA_ZERO and theta[1] < 1:
        peak = math.sqrt((1 - theta[1]) / theta[2])
        peak_low, peak_high = _peak_interval(theta, covariance, dof, level)
    fit = ModelFit(
        model=model,
        coefficients=coefficients,
        n_obs=int(n.size),
        n_sizes=n_sizes,
        size_range=(float(n.min()), float(n.max())),
        rss=rss,
        aicc=aicc,
        residuals=residuals,
        exactly_determined=n_sizes == p,
        can_extrapolate=n_sizes >= p + 2,
        peak=peak,
        words="",
        covariance=covariance,
        dof=dof,
        peak_low=peak_low,
        peak_high=peak_high,
    )
    return _with_words(fit)


def _peak_interval(theta, covariance, dof: int, level: float) -> tuple[float | None, ...]:
    """The interval of USL's ``N* = sqrt((1 - sigma) / kappa)`` by the delta method on log N*.

    ``log N* = (log(1 - sigma) - log kappa) / 2``; its gradient in (sigma, kappa) is
    ``(-1 / (2 (1 - sigma)), -1 / (2 kappa))``. When kappa's own interval reaches 0 the peak
    may lie at infinity, so the upper end is None (unbounded).
    """
    if covariance is None:
        return None, None
    sigma, kappa = float(theta[1]), float(theta[2])
    cov = np.array(covariance)[1:, 1:]
    grad = np.array([-0.5 / (1 - sigma), -0.5 / kappa])
    se = float(np.sqrt(max(grad @ cov @ grad, 0.0)))
    quantile = float(stats.t.ppf(0.5 + level / 2, dof))
    log_peak = 0.5 * (math.log(1 - sigma) - math.log(kappa))
    low = math.exp(log_peak - quantile * se)
    kappa_low = kappa - quantile * math.sqrt(max(cov[1, 1], 0.0))
    high = math.exp(log_peak + quantile * se) if kappa_low > 0 else None
    return low, high


def choose_model(
    sizes: Sequence[float],
    times: Sequence[float],
    *,
    residuals: Residuals = "relative",
    level: float = LEVEL,
) -> ModelChoice:
    """Fit linear, Amdahl and USL to strong-scaling times (one entry per run) and choose by AICc.

    Throughput is ``1 / T``. Laws with more coefficients than distinct sizes are left out and
    the words say so; a law without an AICc (too few runs) takes no part in the choice.
    """
    n, t = _arrays(sizes, times)
    fits: list[ModelFit] = []
    skipped: list[str] = []
    for model in _NAMES:
        try:
            fits.append(fit_law(model, n, 1 / t, residuals=residuals, level=level))
        except ValueError:
            skipped.append(_TITLES[model])
    eligible = sorted((f for f in fits if f.aicc is not None), key=lambda f: f.aicc or 0.0)
    if not eligible:
        words = (
            f"no law chosen: {n.size} runs at {np.unique(n).size} sizes are too few for AICc; "
            "add --repeat or more --workers sizes"
        )
        return ModelChoice(None, tuple(fits), "AICc", (), words)
    best = eligible[0]
    # Prefer the simplest law within AICC_TIE of the lowest: the data cannot separate them.
    simplest = min(
        (f for f in eligible if (f.aicc or 0.0) - (best.aicc or 0.0) < AICC_TIE),
        key=lambda f: len(f.coefficients),
    )
    delta = tuple((f.model, (f.aicc or 0.0) - (simplest.aicc or 0.0)) for f in eligible)
    words = _choice_words(simplest, eligible, skipped)
    return ModelChoice(simplest.model, tuple(fits), "AICc", delta, words)


def gustafson_fit(
    sizes: Sequence[float], times: Sequence[float], *, base: float | None = None, level=LEVEL
) -> Coefficient:
    """Gustafson's serial fraction ``alpha`` of a weak-scaling sweep (one entry per run).

    Scaled speedup per run ``S = r * median(T(base)) / T`` with ``r = N / base``; the law
    ``S = r - alpha (r - 1)`` is linear in ``alpha``, so ordinary least squares gives it with a
    t interval (Gustafson, CACM 31(5), 1988). Raises ``ValueError`` without a size above base.
    """
    n, t = _arrays(sizes, times)
    base = float(n.min()) if base is None else float(base)
    at_base = t[n == base]
    if at_base.size == 0:
        raise ValueError(f"no run at the base size {base:g}")
    r = n / base
    s = r * float(np.median(at_base)) / t
    x, y = r - 1, r - s
    if not np.any(x > 0):
        raise ValueError("a Gustafson fit needs a size above the base size")
    alpha = float(np.sum(x * y) / np.sum(x * x))
    dof = int(np.sum(x > 0)) - 1
    if dof < 1:
        return Coefficient("alpha", min(max(alpha, 0.0), 1.0), None, None, None, level)
    resid = y[x > 0] - alpha * x[x > 0]
    stderr = float(np.sqrt(np.sum(resid**2) / dof / np.sum(x * x)))
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * stderr
    clip = lambda v: min(max(v, 0.0), 1.0)  # noqa: E731
    return Coefficient("alpha", clip(alpha), stderr, clip(alpha - half), clip(alpha + half), level)


def _law(model: str) -> Callable[..., np.ndarray]:
    if model == "linear":
        return lambda n, gamma: gamma * n
    if model == "amdahl":
        return lambda n, gamma, sigma: gamma * n / (1 + sigma * (n - 1))
    if model == "usl":
        return lambda n, gamma, sigma, kappa: (
            gamma * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))
        )
    raise ValueError(f"unknown scaling law {model!r}; expected one of {', '.join(_NAMES)}")


def _residual(fitted: np.ndarray, measured: np.ndarray, residuals: Residuals) -> np.ndarray:
    if residuals == "absolute":
        return fitted - measured
    return np.log(np.maximum(fitted, 1e-300)) - np.log(measured)


def _start(model: str, n: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A starting point: ``gamma`` from the smallest size, then Gunther's quadratic on C(N)."""
    small = n == n.min()
    gamma = float(np.median(x[small] / n[small]))
    if model == "linear":
        return np.array([gamma])
    # N / C - 1 = sigma (N - 1) + kappa N (N - 1): linear least squares (Gunther 2007, 5.2.3).
    y = n / (x / gamma) - 1
    design = np.column_stack([n - 1, n * (n - 1)])
    (sigma, kappa), *_ = np.linalg.lstsq(design, y, rcond=None)
    sigma = float(np.clip(sigma, 1e-6, 0.99))
    if model == "amdahl":
        return np.array([gamma, sigma])
    return np.array([gamma, sigma, float(max(kappa, 1e-9))])


def _coefficients(names, theta, jac, rss, dof, level, upper) -> tuple[Coefficient, ...]:
    if dof < 1:
        return tuple(
            Coefficient(nm, float(v), None, None, None, level)
            for nm, v in zip(names, theta, strict=True)
        )
    cov = np.linalg.pinv(jac.T @ jac) * (rss / dof)
    quantile = float(stats.t.ppf(0.5 + level / 2, dof))
    out = []
    for i, name in enumerate(names):
        stderr = float(np.sqrt(max(cov[i, i], 0.0)))
        low = max(theta[i] - quantile * stderr, 0.0)  # physical range: no negative coefficient
        high = min(theta[i] + quantile * stderr, upper[i])
        out.append(Coefficient(name, float(theta[i]), stderr, float(low), float(high), level))
    return tuple(out)


def _with_words(fit: ModelFit) -> ModelFit:
    parts = [_TITLES[fit.model]]
    if fit.model != "linear":
        sigma = next(c for c in fit.coefficients if c.name == "sigma")
        parts.append(f"sigma {_coef_text(sigma)}")
    if fit.model == "usl":
        kappa = next(c for c in fit.coefficients if c.name == "kappa")
        parts.append(f"kappa {_coef_text(kappa)}")
        if fit.peak is None:
            parts.append("no peak (kappa 0: no coherency cost seen)")
        elif fit.peak < fit.size_range[1]:
            parts.append(f"throughput peaks at N*={fit.peak:.3g} and falls beyond (retrograde)")
        else:
            parts.append(f"throughput would peak at N*={fit.peak:.3g}")
    if fit.exactly_determined:
        parts.append(
            f"exactly determined: {len(fit.coefficients)} coefficients from {fit.n_sizes} "
            "sizes, so its closeness to the medians means nothing"
        )
    if not fit.can_extrapolate:
        parts.append(
            f"not extrapolated beyond {fit.size_range[1]:g}: needs "
            f"{len(fit.coefficients) + 2} sizes, measured {fit.n_sizes}"
        )
    words = "; ".join(parts)
    return ModelFit(**{**fit.__dict__, "words": words})


def _coef_text(c: Coefficient) -> str:
    if c.low is None or c.high is None:
        return f"{number(c.value)} (no interval: no degrees of freedom)"
    return f"{number(c.value)} ({100 * c.level:.0f}% CI {number(c.low)}-{number(c.high)})"


def number(value: float) -> str:
    """A coefficient in 3 significant digits, and 0 as ``0`` (never ``1e-17``)."""
    return "0" if abs(value) <= KAPPA_ZERO else f"{value:.3g}"


def _choice_words(best: ModelFit, eligible: list[ModelFit], skipped: list[str]) -> str:
    others = [f for f in eligible if f is not best]
    comparisons = []
    for other in others:
        diff = (other.aicc or 0.0) - (best.aicc or 0.0)
        if diff >= AICC_TIE:
            comparisons.append(f"AICc {diff:.1f} lower than {_TITLES[other.model]}")
        elif diff > -AICC_TIE:
            comparisons.append(f"{_TITLES[other.model]} about as good, AICc within {AICC_TIE:g}")
        else:
            comparisons.append(f"{_TITLES[other.model]} lower AICc by {-diff:.1f} but more complex")
    text = f"{_TITLES[best.model]} fits best"
    if comparisons:
        text += f" ({'; '.join(comparisons)})"
    if best.model == "usl" and best.peak is not None:
        text += f": throughput peaks at N*={best.peak:.3g} and falls beyond"
    elif best.model == "amdahl":
        sigma = best.coef("sigma")
        text += f": serial fraction {sigma:.3g}"
        if best.can_extrapolate:
            text += f", speedup limited to {1 / max(sigma, 1e-12):.3g}x"
    elif best.model == "linear":
        text += ": no loss of efficiency the data can show"
    if best.exactly_determined:
        text += f"; exactly determined by {best.n_sizes} sizes, so the fit cannot be checked"
    elif not best.can_extrapolate:
        text += f"; not extrapolated beyond {best.size_range[1]:g} workers ({best.n_sizes} sizes)"
    if skipped:
        text += f". Not fitted (more coefficients than sizes): {', '.join(skipped)}"
    return text


def _arrays(sizes: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(sizes, dtype=float)
    v = np.asarray(values, dtype=float)
    if n.ndim != 1 or n.shape != v.shape or n.size == 0:
        raise ValueError("sizes and values must be non-empty sequences of one length")
    if np.any(n < 1) or np.any(v <= 0):
        raise ValueError("sizes must be >= 1 and values positive")
    return n, v
