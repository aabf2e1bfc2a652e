"""Throughput sweeps (``runner scale --mode throughput``, issue 19) in a report: the problem grows,
the resources stay; how much work a second does the same machine get done?

The axis is the ``--vary`` parameter that grows (``n``); a point's size is its value. Per point:
``throughput``, the size over the median run time (``n`` per second), and ``relative``, that
throughput over the series' smallest size's: 1.0 means the work per second held as the problem
grew; above 1, fixed costs (start-up of tasks, scheduling) were spread over more work; below 1,
something grew faster than the work (memory traffic, caches, the result's size). Its interval
is the ratio of times' (Hodges-Lehmann, as for speedups), scaled by the ratio of sizes.
No speedup and no law are fitted: the resources did not change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cluster_runner.analysis.identity import value_text

if TYPE_CHECKING:
    from cluster_runner.analysis.aggregate import Experiment, PointStats


def is_throughput(exp: Experiment) -> bool:
    return exp.mode == "throughput"


def relative(exp: Experiment) -> dict[int, tuple[float, float, float] | None]:
    """``id(point) -> (relative throughput, low, high)`` against its series' smallest size."""
    from cluster_runner.analysis.intervals import ratio_interval

    found: dict[int, tuple[float, float, float] | None] = {}
    for series in exp.series:
        timed = series.timed
        if not timed:
            continue
        first = timed[0]
        for p in series.points:
            if p.time is None:
                found[id(p)] = None
                continue
            scale = p.size / first.size
            if p is first:
                found[id(p)] = (1.0, 1.0, 1.0)
                continue
            ratio = ratio_interval(list(first.samples), list(p.samples))  # T(first) / T(p)
            found[id(p)] = (scale * ratio.estimate, scale * ratio.low, scale * ratio.high)
    return found


def columns(exp: Experiment) -> list[tuple[str, object]]:
    """The throughput table's columns after the key columns: rate and relative rate."""
    rel = relative(exp)

    def rate(p: PointStats) -> str:
        return "-" if p.time is None else f"{p.size / p.time.median:.4g}"

    def rel_text(p: PointStats) -> str:
        found = rel.get(id(p))
        if found is None:
            return "-"
        centre, low, high = found
        return f"{centre:.2f}" if low == high else f"{centre:.2f} ({low:.2f}-{high:.2f})"

    return [(f"{exp.axis}/s", rate), ("relative (CI)", rel_text)]


def headline_words(exp: Experiment) -> str:
    fixed = {p.nodes or p.workers for s in exp.series for p in s.points}
    unit = "node" if any(p.nodes for s in exp.series for p in s.points) else "worker"
    at = ",".join(str(n) for n in sorted(fixed))
    return f"throughput as {exp.axis} grows, {at} {unit}(s) fixed"


def lines(exp: Experiment) -> list[str]:
    """The conclusions: per series, the throughput at the smallest and largest size."""
    rel = relative(exp)
    out = []
    for series in exp.series:
        timed = series.timed
        if len(timed) < 2:
            continue
        first, last = timed[0], timed[-1]
        centre, low, high = rel[id(last)] or (float("nan"),) * 3
        verdict = (
            "held" if low <= 1.0 <= high else ("rose" if low > 1.0 else "fell")
        )  # the interval says whether the change is real
        out.append(
            f"{series.backend}: throughput {verdict} as {exp.axis} grew from"
            f" {value_text(first.size)} to {value_text(last.size)}:"
            f" {first.size / first.time.median:.4g} to {last.size / last.time.median:.4g}"
            f" {exp.axis}/s, {centre:.2f}x (interval {low:.2f}-{high:.2f})."
        )
    return out or ["Fewer than two problem sizes were timed: no throughput trend to read."]


def where(p: PointStats, axis: str) -> str:
    """A point in words: ``local x2 n=1e9``."""
    return f"{p.backend} x{p.nodes or p.workers} {axis}={value_text(p.size)}"


def draw(exp: Experiment, left, right, colours, legend) -> None:
    """The plot: run time against the problem size (left), throughput relative to the
    smallest size with its interval (right), both on log-scaled sizes."""
    rel = relative(exp)
    for colour, series in zip(colours, exp.series, strict=True):
        timed = series.timed
        if not timed:
            continue
        xs = [p.size for p in timed]
        left.errorbar(
            xs,
            [p.time.median for p in timed],
            yerr=[[p.time.median - p.time.ci_low for p in timed],
                  [p.time.ci_high - p.time.median for p in timed]],
            marker="o", capsize=4, color=colour, label=series.backend,
        )  # fmt: skip
        found = [rel[id(p)] for p in timed]
        right.errorbar(
            xs,
            [f[0] for f in found],
            yerr=[[f[0] - f[1] for f in found], [f[2] - f[0] for f in found]],
            marker="o", capsize=4, color=colour, label=series.backend,
        )  # fmt: skip
    right.axhline(1.0, color="grey", linestyle=":", linewidth=1, label="work per second held")
    left.set(xlabel=exp.axis, ylabel="run time s (median)", title="run time")
    right.set(xlabel=exp.axis, ylabel="throughput / smallest size's", title="relative throughput")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
        legend(ax)
