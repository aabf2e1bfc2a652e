"""The scaling plot: speedup and efficiency against size, one line per backend.

matplotlib is imported inside :func:`plot_experiment`, with the non-interactive Agg backend, so
that neither ``runner --help`` nor a report without ``--plot`` pays for it, and so that a plot
can be written on a machine without a display.

Strong and weak sweeps get two panels: speedup against the report's reference, with each
point's interval as error bars (the title says the level those intervals reach: 75% with 3
runs, never a nominal "95%"), the ideal line, and the law the data chose (:mod:`.series`):
solid over the sizes measured, with its confidence band where the fit has residual degrees of
freedom, and dotted beyond them only where the law may be extrapolated (at least coefficients +
2 sizes); a USL peak N* is marked. The second panel is efficiency, with the ideal 100% and the
50% line a report calls the point where scaling stops paying. Sizes with more workers than the
machine's CPUs are shaded on both. A granularity sweep gets run time and overhead share against
the chunk count, on a log axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster_runner.analysis.intervals import level_text
from cluster_runner.analysis.models import number
from cluster_runner.errors import UsageError

if TYPE_CHECKING:
    from cluster_runner.analysis.aggregate import Experiment, Series


def plot_experiment(exp: Experiment, path: str | Path) -> Path:
    """Write the experiment's plot to ``path`` (PNG, or any format matplotlib knows by suffix)."""
    return save_figure(scaling_figure(exp), path, "the plot")


def save_figure(fig: Any, path: str | Path, what: str) -> Path:
    """Write ``fig`` to ``path`` and close it; a path that cannot be written is one line."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        fig.savefig(path, dpi=120)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot write {what} to {path}: {exc}") from None
    finally:
        plt.close(fig)
    return path


def scaling_figure(exp: Experiment):
    """The experiment's plot as a matplotlib figure (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    try:
        if exp.axis == "chunks":
            _granularity(exp, left, right)
        elif exp.mode == "throughput":  # issue 19
            from cluster_runner.analysis.throughput import draw

            draw(exp, left, right, _colours(len(exp.series)), _legend)
        else:
            _scaling(exp, left, right)
    except BaseException:
        plt.close(fig)
        raise
    what = (
        "granularity: task count at fixed workers"
        if exp.axis == "chunks"
        else f"throughput as {exp.axis} grows"
        if exp.mode == "throughput"
        else f"{exp.mode} scaling over {exp.axis}"
    )
    fig.suptitle(f"{exp.job}: {what}\n{exp.machine}", fontsize=11)
    return fig


def time_figure(exp: Experiment):
    """Run time against size, one line per backend: each point's median with its interval,
    and the chosen law as a time (the reference's median over the fitted speedup) with its
    band, solid over the sizes measured. None on the chunks axis (its plot shows times)."""
    if exp.axis == "chunks" or exp.mode == "throughput":
        return None
    import statistics

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    colours = _colours(len(exp.series))
    levels = set()
    for colour, series in zip(colours, exp.series, strict=True):
        timed = series.timed
        if not timed:
            continue
        levels.update(round(p.time.ci_level, 4) for p in timed if p.time.ci_level)
        ax.errorbar(
            [p.size for p in timed],
            [p.time.median for p in timed],
            yerr=[[p.time.median - p.time.ci_low for p in timed],
                  [p.time.ci_high - p.time.median for p in timed]],
            marker="o", capsize=4, color=colour, label=series.backend,
        )  # fmt: skip
        if series.fit is None or not series.reference_samples or len(timed) < 2:
            continue
        xs = np.linspace(min(p.size for p in timed), max(p.size for p in timed), 60)
        curve = series.curve(xs)
        if curve is None:
            continue
        t_ref = statistics.median(series.reference_samples)
        factor = xs / series.base if exp.mode == "weak" else 1.0  # weak: scaled speedup
        centre, low, high = curve
        ax.plot(xs, t_ref * factor / centre, color=colour, linewidth=1, alpha=0.7,
                label=f"{series.backend}: {series.fit} fit")  # fmt: skip
        if low is not None and high is not None:
            ax.fill_between(xs, t_ref * factor / high, t_ref * factor / low, color=colour,
                            alpha=0.12, linewidth=0)  # fmt: skip
    bars = "/".join(level_text(v) for v in sorted(levels)) or "no"
    ax.set(xlabel=exp.axis, ylabel="run time s (median)",
           title=f"run time (bars: {bars} CI of the median)")  # fmt: skip
    sizes = sorted({p.size for s in exp.series for p in s.timed})
    if sizes:
        ax.set_xticks(sizes)
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return fig


def _scaling(exp: Experiment, left, right) -> None:
    weak = exp.mode == "weak"
    colours = _colours(len(exp.series))
    sizes = sorted({p.size for s in exp.series for p in s.timed})
    largest = max(sizes, default=1)
    extrapolate = any(s.may_extrapolate() for s in exp.series)
    far = 2 * largest if extrapolate else largest  # fits are drawn dotted only where allowed
    base = min(sizes, default=1)
    span = max(far - base, 1)
    dodge = 0.012 * span  # side by side, so that overlapping error bars stay legible
    levels = set()
    for i, (colour, series) in enumerate(zip(colours, exp.series, strict=True)):
        timed = [p for p in series.timed if p.speedup is not None]
        if not timed:
            continue
        shift = (i - (len(exp.series) - 1) / 2) * dodge
        levels.update(
            round(p.speedup_level, 4) for p in timed if p.speedup_level and not p.reference
        )
        barred = [bool(p.speedup_level) and not p.reference for p in timed]  # none at the ref
        below = [p.speedup - p.speedup_low if b else 0 for p, b in zip(timed, barred, strict=True)]
        above = [p.speedup_high - p.speedup if b else 0 for p, b in zip(timed, barred, strict=True)]
        left.errorbar(
            [p.size + shift for p in timed],
            [p.speedup for p in timed],
            yerr=[below, above],
            marker="o",
            capsize=4,
            color=colour,
            label=series.backend,
        )
        right.plot(
            [p.size for p in timed],
            [p.efficiency for p in timed],
            marker="o",
            color=colour,
            label=series.backend,
        )
        _fit_lines(left, right, series, colour, far)
    if not any(p.speedup is not None for s in exp.series for p in s.timed):
        for ax in (left, right):  # say why the axes are empty rather than leave them blank
            ax.text(0.5, 0.5, "no speedup to draw: each backend timed at one size and no\n"
                    "reference timed (time serial, or give --baseline BACKEND@N)",
                    transform=ax.transAxes, ha="center", va="center", color="dimgrey")  # fmt: skip
    reference = exp.baseline.spec if exp.baseline and exp.baseline.fixed else None
    ideal_base = exp.baseline.size if reference else base
    left.plot([ideal_base, far], [1, far / ideal_base], "k--", linewidth=1, label="ideal")
    right.axhline(1.0, color="k", linestyle="--", linewidth=1, label="ideal")
    right.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="50%")
    if far > largest:
        for ax in (left, right):
            ax.axvspan(largest, far, color="grey", alpha=0.08, label="fit, extrapolated")
    _oversubscribed(exp, left, right, far + 0.05 * span)
    bars = (
        "no intervals"
        if not levels
        else "bars: " + "/".join(level_text(v) for v in sorted(levels)) + " CI"
    )
    against = f" vs {reference}" if reference else ""
    left.set(
        xlabel=exp.axis,
        ylabel=("scaled speedup" if weak else "speedup T(ref)/T(N)") + against,
        title=f"{'scaled speedup' if weak else 'speedup'} ({bars})",
    )
    right.set(
        xlabel=exp.axis,
        ylabel="weak efficiency T(ref)/T(N)" if weak else "efficiency S/(N/ref)",
        title="efficiency",
        ylim=(0, max(1.2, *_efficiencies(exp))),
    )
    for ax in (left, right):
        ax.set_xticks(sorted({*sizes, far}))
        ax.set_xlim(base - 0.05 * span, far + 0.05 * span)
        ax.grid(True, alpha=0.3)
        _legend(ax)


def _oversubscribed(exp: Experiment, left, right, edge: float) -> None:
    """Shade the sizes with more workers than the machine's CPUs."""
    over = [p for s in exp.series for p in s.timed if p.oversubscribed]
    if not over:
        return
    cpus = over[0].cpus
    start = min(p.size for p in over) - 0.5  # halfway from the last size within the CPUs
    for ax in (left, right):
        ax.axvspan(
            start, edge, facecolor="none", edgecolor="tab:red", hatch="//", alpha=0.25,
            linewidth=0, label=f"more workers than the {cpus} CPUs" if ax is left else None,
        )  # fmt: skip


def _fit_lines(left, right, series: Series, colour, far: float) -> None:
    """The chosen law on both panels: solid with its band over the measured sizes, dotted
    beyond them only where it may be extrapolated; a USL peak N* as a vertical line."""
    import numpy as np

    timed = series.timed
    if series.fit is None or not timed or series.base is None:
        return
    low_n, high_n = min(p.size for p in timed), max(p.size for p in timed)
    inside = np.linspace(low_n, high_n, 60)
    ratio = series.base  # efficiency is S / (n / reference size)
    name = {"linear": "linear", "amdahl": "Amdahl", "usl": "USL", "gustafson": "Gustafson"}
    label = f"{series.backend}: {name[series.fit]} fit"
    fit = series.chosen
    if fit is not None and fit.model == "usl":
        label += f" (σ={number(fit.coef('sigma'))}, κ={number(fit.coef('kappa'))})"
    elif series.serial_fraction is not None:
        label += f" ({'α' if series.fit == 'gustafson' else 'σ'}={number(series.serial_fraction)})"
    parts = [(inside, "-")]
    if series.may_extrapolate() and far > high_n:
        parts.append((np.linspace(high_n, far, 40), ":"))
    for xs, style in parts:
        curve = series.curve(xs)
        if curve is None:
            return
        centre, low, high = curve
        left.plot(xs, centre, color=colour, linewidth=1, alpha=0.7, linestyle=style,
                  label=label if style == "-" else None)  # fmt: skip
        right.plot(xs, centre / (xs / ratio), color=colour, linewidth=1, alpha=0.7,
                   linestyle=style)  # fmt: skip
        if low is not None:
            left.fill_between(xs, low, high, color=colour, alpha=0.12, linewidth=0)
    if fit is not None and fit.model == "usl" and fit.peak is not None and fit.peak <= far:
        left.axvline(fit.peak, color=colour, linestyle="-.", linewidth=1,
                     label=f"{series.backend}: USL peak N*={fit.peak:.3g}")  # fmt: skip


def _efficiencies(exp: Experiment) -> list[float]:
    return [p.efficiency for s in exp.series for p in s.timed if p.efficiency is not None] or [1]


def _granularity(exp: Experiment, left, right) -> None:
    colours = _colours(len(exp.series))
    for colour, series in zip(colours, exp.series, strict=True):
        timed = series.timed
        if not timed:
            continue
        label = f"{series.backend}, {series.workers} workers"
        xs = [p.chunks for p in timed]
        below = [p.time.median - p.time.ci_low for p in timed]
        above = [p.time.ci_high - p.time.median for p in timed]
        left.errorbar(
            xs,
            [p.time.median for p in timed],
            yerr=[below, above],
            marker="o",
            capsize=4,
            color=colour,
            label=label,
        )
        right.plot(xs, [p.overhead_share for p in timed], marker="o", color=colour, label=label)
    right.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="overhead = work")
    left.set(
        xlabel="chunks (tasks per stage)",
        ylabel="run time s",
        title=f"run time (bars: {_time_levels(exp)} CI of the median)",
    )
    right.set(
        xlabel="chunks (tasks per stage)",
        ylabel="share of worker time outside tasks",
        title="per-task overhead",
        ylim=(0, 1),
    )
    chunks = sorted({p.chunks for s in exp.series for p in s.timed})
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(chunks, [str(c) for c in chunks])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        _legend(ax)


def _colours(n: int) -> list:
    import matplotlib.pyplot as plt

    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return [cycle[i % len(cycle)] for i in range(n)]


def _legend(ax) -> None:
    """A legend where there is something to name (no point verified: none to draw)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _time_levels(exp: Experiment) -> str:
    levels = sorted({round(p.time.ci_level, 4) for s in exp.series for p in s.timed})
    return "/".join(level_text(v) for v in levels if v) or "no"
