"""The scaling plot: speedup and efficiency against size, one line per backend.

matplotlib is imported inside :func:`plot_experiment`, with the non-interactive Agg backend, so
that neither ``runner --help`` nor a report without ``--plot`` pays for it, and so that a plot
can be written on a machine without a display.

Strong and weak sweeps get two panels: speedup (with its 95% bootstrap interval as error bars,
the ideal line, and the fitted law drawn solid over the measured sizes and dotted beyond, to
the largest size it predicts), and efficiency (with the ideal 100% and the 50% line a report
calls the point where scaling stops paying). A granularity sweep gets run time and overhead
share against the chunk count, on a log axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cluster_runner.errors import UsageError

if TYPE_CHECKING:
    from cluster_runner.analysis.aggregate import Experiment, Series


def plot_experiment(exp: Experiment, path: str | Path) -> Path:
    """Write the experiment's plot to ``path`` (PNG, or any format matplotlib knows by suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    try:
        if exp.axis == "chunks":
            _granularity(exp, left, right)
        else:
            _scaling(exp, left, right)
        what = (
            "granularity: task count at fixed workers"
            if exp.axis == "chunks"
            else f"{exp.mode} scaling over {exp.axis}"
        )
        fig.suptitle(f"{exp.job}: {what}\n{exp.machine}", fontsize=11)
        try:
            fig.savefig(path, dpi=120)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot write the plot to {path}: {exc}") from None
    finally:
        plt.close(fig)
    return path


def _scaling(exp: Experiment, left, right) -> None:
    weak = exp.mode == "weak"
    colours = _colours(len(exp.series))
    sizes = sorted({p.size for s in exp.series for p in s.timed})
    largest = max(sizes, default=1)
    far = 2 * largest  # the fits are drawn, dotted, out to the first size they predict
    base = min((s.base for s in exp.series if s.base), default=1)
    dodge = 0.012 * (far - base)  # side by side, so that overlapping error bars stay legible
    for i, (colour, series) in enumerate(zip(colours, exp.series, strict=True)):
        timed = series.timed
        if not timed:
            continue
        shift = (i - (len(exp.series) - 1) / 2) * dodge
        xs = [p.size for p in timed]
        ys = [p.speedup for p in timed]
        below = [p.speedup - p.speedup_low for p in timed]
        above = [p.speedup_high - p.speedup for p in timed]
        left.errorbar(
            [x + shift for x in xs],
            ys,
            yerr=[below, above],
            marker="o",
            capsize=4,
            color=colour,
            label=series.backend,
        )
        efficiencies = [p.efficiency for p in timed]
        right.plot(xs, efficiencies, marker="o", color=colour, label=series.backend)
        _fit_lines(left, right, series, colour, weak, far)
    left.plot([base, far], [1, far / base], "k--", linewidth=1, label="ideal")
    right.axhline(1.0, color="k", linestyle="--", linewidth=1, label="ideal")
    right.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="50%")
    for ax in (left, right):
        ax.axvspan(largest, far, color="grey", alpha=0.08, label="fit, extrapolated")
    left.set(
        xlabel=exp.axis,
        ylabel="scaled speedup N·T(1)/T(N)" if weak else "speedup T(1)/T(N)",
        title=f"{'scaled speedup' if weak else 'speedup'} (bars: 95% bootstrap CI)",
    )
    right.set(
        xlabel=exp.axis,
        ylabel="weak efficiency T(1)/T(N)" if weak else "efficiency S/N",
        title="efficiency",
        ylim=(0, max(1.2, *_efficiencies(exp))),
    )
    for ax in (left, right):
        ax.set_xticks([*sizes, far])
        ax.set_xlim(base - 0.05 * (far - base), far + 0.05 * (far - base))
        ax.grid(True, alpha=0.3)
        _legend(ax)


def _fit_lines(left, right, series: Series, colour, weak: bool, far: float) -> None:
    """The fitted law on both panels: solid over the measured sizes, dotted beyond them."""
    import numpy as np

    if series.serial_fraction is None or series.base is None:
        return
    measured = max(p.size for p in series.timed)
    f, base = series.serial_fraction, series.base

    def law(n):
        r = n / base
        if weak:
            return r - f * (r - 1)
        return (f + (1 - f) / base) / (f + (1 - f) / n)

    def efficiency(n):  # S / r in both modes (weak: scaled speedup / r = T(base) / T(n))
        return law(n) / (n / base)

    name = "Gustafson" if weak else "Amdahl"
    inside, beyond = np.linspace(base, measured, 50), np.linspace(measured, far, 50)
    for ax, curve in ((left, law), (right, efficiency)):
        label = f"{series.backend} {name} fit (f={f:.3f})" if ax is left else None
        ax.plot(inside, curve(inside), color=colour, linewidth=1, alpha=0.6, label=label)
        ax.plot(beyond, curve(beyond), color=colour, linewidth=1, alpha=0.6, linestyle=":")


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
    left.set(xlabel="chunks (tasks per stage)", ylabel="run time s", title="run time (95% CI)")
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
