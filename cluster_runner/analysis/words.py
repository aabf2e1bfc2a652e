"""What the figures say, in sentences: the conclusions every report format ends with.

Each sentence states only what the numbers behind it support (issue 14): the headline names
the best point *and* the largest; a difference is called real only when the exact verdict of
:mod:`.series` says so at 5%, and otherwise "cannot tell apart", with the runs it would take;
every interval carries the level it reaches; the model is named with why it was chosen, and is
not extrapolated from too few sizes; sizes beyond the machine's CPUs are called out; the
Karp-Flatt trend is read out; and measurement warnings say what to change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cluster_runner.analysis.baseline import describe
from cluster_runner.analysis.identity import value_text
from cluster_runner.analysis.intervals import level_text, min_repeats
from cluster_runner.analysis.models import number
from cluster_runner.console import range_text as _range

if TYPE_CHECKING:
    from cluster_runner.analysis.aggregate import Experiment, PointStats
    from cluster_runner.analysis.series import Series

AXIS_WORDS = {"workers": "workers", "nodes": "nodes", "chunks": "chunks"}
#: Percent of the CPUs that other processes may use before a report warns of noisy times.
NOISY_LOAD = 20.0


def conclusions(exp: Experiment) -> list[str]:
    """What the figures say, in sentences, most important first."""
    if not any(s.timed for s in exp.series):
        lines = ["No timed run verified: there are no times to compare."]
    elif exp.axis == "chunks":
        lines = _granularity_lines(exp)
    elif exp.mode == "throughput":  # issue 19
        from cluster_runner.analysis.throughput import lines as throughput_lines

        lines = throughput_lines(exp)
    else:
        lines = _scaling_lines(exp)
    points = [p for s in exp.series for p in s.points]
    ups: dict[str, list[float]] = {}
    warms: dict[str, list[float]] = {}
    for s in exp.series:
        for p in s.points:
            if p.startup_s:
                ups.setdefault(s.backend, []).append(p.startup_s)
            if p.warmup_s:
                warms.setdefault(s.backend, []).append(p.warmup_s)
    if ups:
        parts = ", ".join(f"{b} {_range((min(v), max(v)), '.2f')} s" for b, v in ups.items())
        lines.append(f"Start-up, not included in the run times: {parts}.")
    if warms:  # the job's warm-up hooks (compiled kernels), timed apart from start-up
        parts = ", ".join(f"{b} {_range((min(v), max(v)), '.2f')} s" for b, v in warms.items())
        lines.append(f"Warm-up of the job's kernels, apart from start-up and runs: {parts}.")
    busy = [p for p in points if p.other_load is not None and p.other_load > NOISY_LOAD]
    if busy:
        worst = max(busy, key=lambda p: p.other_load)
        lines.append(
            f"Other processes used up to {worst.other_load:.0f}% of the CPUs just before the"
            f" {_sized(exp, worst)} points were timed:"
            " expect noisy times, and trust only differences the verdicts call real."
        )
    if any(p.time and p.time.median < 0.5 and p.cpu_utilisation for p in points):
        lines.append(
            "CPU use (whole process tree, share of the workers' cores) is coarse for runs"
            " under 0.5 s: the OS counts CPU time in 10 ms ticks."
        )
    for p in points:
        if p.problems:
            lines.append(
                f"{p.backend} at {_at(exp, p)}: {p.not_counted} run(s) not counted:"
                f" {'; '.join(p.problems)}"
            )
    return lines + _hygiene_lines(exp)


def _sized(exp: Experiment, p: PointStats) -> str:
    """``2-worker``, ``2-node``, or a throughput sweep's ``n=1e9``."""
    if exp.axis not in ("workers", "nodes"):
        return _at(exp, p)
    return f"{p.size}-{'node' if exp.axis == 'nodes' else 'worker'}"


def _at(exp: Experiment, p: PointStats) -> str:
    if exp.axis == "chunks":
        return f"{p.chunks} chunks"
    if exp.axis not in AXIS_WORDS:  # throughput: the problem size is the axis
        return f"{exp.axis}={value_text(p.size)}"
    return f"{p.size} {AXIS_WORDS[exp.axis]}"


def _scaling_lines(exp: Experiment) -> list[str]:
    word = AXIS_WORDS[exp.axis]
    kind = "scaled speedup" if exp.mode == "weak" else "speedup"
    scalable = [s for s in exp.series if s.reference and _measured(s)]
    if not scalable:
        return [_no_speedup(exp)]
    lines = [_headline(exp, scalable, kind, word)]
    lines += _comparison_lines(exp, word)
    drops = []
    for s in exp.series:
        low = [p for p in s.timed if p.efficiency is not None and p.efficiency < 0.5]
        if low:
            drops.append(f"{s.backend} from {_n(low[0].size, word)} ({low[0].efficiency:.0%})")
    if drops:
        lines.append("Efficiency drops below 50%: " + "; ".join(drops) + ".")
    else:
        lines.append("Efficiency stays at or above 50% at every point measured.")
    lines.append(describe(exp.baseline, word))
    for s in exp.series:
        if s.reference is None and s.timed:
            lines.append(
                f"{s.backend}: timed at one size only, so no speedup of its own; compare it"
                " with another backend with --baseline BACKEND@N."
            )
    for s in exp.series:
        lines += _model_lines(s, word)
    for f in exp.findings:
        if f.kind == "oversubscribed":
            lines.append(f.text[0].upper() + f.text[1:] + ".")
    return lines


def _n(size: float, word: str) -> str:
    """``1 worker``, ``2 workers``: a size with its unit, in the right number."""
    return f"{size:g} {word.rstrip('s') if size == 1 else word}"


def _no_speedup(exp: Experiment) -> str:
    return (
        "No speedup can be computed: each backend was timed at one size, and serial (the T(1)"
        f" reference) was not timed. Time it (runner submit --job {exp.job} --backend serial)"
        " or give --baseline BACKEND@N, e.g. the fastest backend's point."
    )


def _measured(s: Series) -> list[PointStats]:
    """The points of a series that have a speedup and are not the reference itself."""
    return [p for p in s.timed if p.speedup is not None and not p.reference]


def _headline(exp: Experiment, scalable: list[Series], kind: str, word: str) -> str:
    """The best point and the largest, of the backend that scales best: best at the largest
    size all share (the ranking of the next line), else by its best point."""
    shared = set.intersection(*({p.size for p in _measured(s)} for s in scalable))
    if shared:
        top = max(shared)
        best = max(scalable, key=lambda s: _point(s, top).speedup)
    else:
        best = max(scalable, key=lambda s: max(p.speedup for p in _measured(s)))
    peak = max(_measured(best), key=lambda p: p.speedup)
    largest = max(_measured(best), key=lambda p: p.size)
    lead = "Scales best: " if len(exp.series) > 1 else "Best point: "
    fit = ""
    if best.fit == "usl" and best.chosen is not None:
        fit = f", USL contention sigma {number(best.chosen.coef('sigma'))}"
        fit += f", coherency kappa {number(best.chosen.coef('kappa'))}"
    elif best.serial_fraction is not None:
        name = {"amdahl": "Amdahl", "gustafson": "Gustafson"}[best.fit]
        fit = f", {name} serial fraction {best.serial_fraction:.3f}"
    text = (
        f"{lead}{best.backend}, {kind} {peak.speedup:.2f}x at {_n(peak.size, word)}"
        f" ({_interval(peak)}{peak.efficiency:.0%} efficient{fit})"
    )
    slower = "; no point is faster than the reference" if peak.speedup < 1 else ""
    if largest is peak:
        return text + f", its best point and its largest size{_over(largest)}{slower}."
    return (
        text + f", its best point; at its largest size, {_n(largest.size, word)}"
        f"{_over(largest)}: {largest.speedup:.2f}x ({largest.efficiency:.0%} efficient)"
        f"{slower}."
    )


def _over(p: PointStats) -> str:
    return f", more workers than the {p.cpus} CPUs" if p.oversubscribed else ""


def _interval(p: PointStats) -> str:
    if p.speedup_level is None or p.speedup_level <= 0 or p.reference:
        return ""
    return f"{level_text(p.speedup_level)} CI {p.speedup_low:.2f}-{p.speedup_high:.2f}, "


def _point(series: Series, size: int) -> PointStats:
    return next(p for p in series.timed if p.size == size)


def _comparison_lines(exp: Experiment, word: str) -> list[str]:
    lines = []
    c = exp.scaling
    if c is not None:
        a, b = c.first_interval, c.second_interval
        shown = f"[{a[0]:.2f}-{a[1]:.2f}] and [{b[0]:.2f}-{b[1]:.2f}]"
        head = f"Next: {c.second} at {c.second_speedup:.2f}x at {_n(c.size, word)}"
        if c.verdict == "different":
            lines.append(
                f"{head}; the {level_text(c.level)} intervals {shown} do not overlap:"
                " a real difference."
            )
        elif c.reachable:
            lines.append(
                f"{head}; the {level_text(c.level)} intervals {shown} overlap: these runs"
                " cannot tell their scaling apart."
            )
        else:
            need = min_repeats(c.alpha / 2)
            lines.append(
                f"{head}; these runs cannot tell their scaling apart: their speedup intervals"
                f" reach {level_text(c.level)}, not the {level_text(1 - c.alpha / 2)} each"
                f" that a verdict at {level_text(c.alpha)} needs (add --repeat {need})."
            )
    t = exp.fastest
    if t is not None:
        ci = f"{level_text(t.level)} CI {t.low:.2f}-{t.high:.2f}x" if t.level > 0 else "no CI"
        head = (
            f"Fastest at {_n(t.size, word)}: {t.fastest} ({t.fastest_median:.3f} s), {t.ratio:.2f}x"
            f" faster than {t.other} ({ci}:"
        )
        if t.verdict == "faster":
            lines.append(f"{head} a real difference, p = {t.p_value:.2g}).")
        elif t.level >= 1 - t.alpha - 1e-12:
            lines.append(f"{head} cannot tell apart, within the noise of these runs).")
        else:
            lines.append(
                f"{head} cannot tell apart: so few runs can never show a difference at"
                f" {level_text(t.alpha)}; add --repeat {max(t.min_repeats, 5)})."
            )
    return lines


def _model_lines(s: Series, word: str) -> list[str]:
    """Which law fits, why, its coefficients and peak; the Karp-Flatt trend."""
    lines = []
    if s.fit == "gustafson" and s.gustafson is not None:
        g = s.gustafson
        ci = "" if g.low is None else f" ({g.level:.0%} CI {number(g.low)}-{number(g.high)})"
        text = f"{s.backend}: Gustafson's serial fraction {number(g.value)}{ci}"
        if s.may_extrapolate():
            text += ", " + _predicted(s)
        else:
            text += f"; not extrapolated: {s.gustafson_sizes} sizes, it takes 3"
        lines.append(text + ".")
    elif s.models is not None:
        text = f"{s.backend}: {s.models.words}."
        fit = s.chosen
        if fit is not None:
            coefs = "; ".join(f"{c.name} {_coef(c)}" for c in fit.coefficients if c.name != "gamma")
            text += f" Coefficients: {coefs}." if coefs else ""
            if fit.model == "usl" and fit.peak is not None:
                text += " " + _retrograde(s, fit, word)
            if s.predictions:
                text += " " + _predicted(s)[0].upper() + _predicted(s)[1:] + "."
        lines.append(text)
    t = s.trend
    if t is not None:
        lines.append(_trend_line(s.backend, t, word))
    return lines


def _coef(c) -> str:
    if c.low is None:
        return f"{number(c.value)} (no interval: as many coefficients as sizes)"
    return f"{number(c.value)} ({c.level:.0%} CI {number(c.low)}-{number(c.high)})"


def _retrograde(s: Series, fit, word: str) -> str:
    high = "unbounded" if fit.peak_high is None else f"{fit.peak_high:.3g}"
    ci = f" (95% CI {fit.peak_low:.3g}-{high})" if fit.peak_low is not None else ""
    beyond = [p.size for p in s.timed if p.size > fit.peak]
    where = (
        f": {', '.join(map(str, beyond))} {word} lie in its retrograde region, where more"
        f" {word} make the job slower"
        if beyond
        else "; no size measured lies beyond it (the retrograde region starts there)"
    )
    return f"Peak N* = {fit.peak:.3g} {word}{ci}{where}."


def _predicted(s: Series) -> str:
    parts = []
    for n, v in s.predictions.items():
        band = s.prediction_intervals.get(n)
        extra = f" (95% band {band[0]:.2f}-{band[1]:.2f})" if band else ""
        parts.append(f"{v:.2f}x at {n}{extra}")
    kind = "scaled speedup" if s.fit == "gustafson" else "speedup"
    return f"predicted {kind} " + ", ".join(parts)


def _trend_line(backend: str, t, word: str) -> str:
    unit = word.rstrip("s")
    if t.kind == "unknown":
        n, e = t.first
        return (
            f"{backend}: Karp-Flatt serial fraction {e:.3f} at {_n(n, word)}; one size above the"
            " reference, so no trend to read (add sizes to --workers)."
        )
    (n1, e1), (n2, e2) = t.first, t.last
    span = f"{e1:.3f} at {n1:g} {word} to {e2:.3f} at {n2:g}"
    slope = (
        f"slope {number(t.slope)} per {unit}, {t.level:.0%} CI {number(t.low)} to {number(t.high)}"
    )
    if t.kind == "growing":
        return (
            f"{backend}: the Karp-Flatt serial fraction grows with the {word}, from {span}"
            f" ({slope}): overhead that grows with the {word} (scheduling, communication,"
            " contention), not a fixed serial part, limits the speedup."
        )
    if t.kind == "falling":
        return (
            f"{backend}: the Karp-Flatt serial fraction falls with the {word}, from {span}"
            f" ({slope}): superlinear effects (caches), or a slow reference run."
        )
    return (
        f"{backend}: the Karp-Flatt serial fraction stays about constant, {span} ({slope},"
        " no trend these runs can show): a fixed serial part, as in Amdahl's law."
    )


def _hygiene_lines(exp: Experiment) -> list[str]:
    """Each point's measurement warnings, one line per warning shared by several points."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for f in exp.findings:
        if not f.where:
            continue
        rest = f.text[len(f.where) + 2 :] if f.text.startswith(f.where + ": ") else f.text
        grouped.setdefault((f.kind, rest), []).append(f.where)
    return [f"{', '.join(wheres)}: {rest}." for (_, rest), wheres in grouped.items()]


def _granularity_lines(exp: Experiment) -> list[str]:
    from cluster_runner.analysis.metrics import first_above

    lines = []
    for s in exp.series:
        timed = s.timed
        if not timed:
            continue
        where = f"{s.backend} on {s.workers} workers"
        best = min(timed, key=lambda p: p.time.median)
        onset = first_above(
            [p.chunks for p in timed], [p.overhead_share or 0.0 for p in timed], 0.5
        )
        if onset is None:
            verdict = f"per-task overhead stays below the work up to {timed[-1].chunks} chunks"
        else:
            p = next(q for q in timed if q.chunks == onset)
            verdict = (
                f"per-task overhead ({p.overhead_s * 1e3:.2f} ms) costs more than the work"
                f" from {onset} chunks on (tasks of {p.task_s * 1e3:.2f} ms)"
            )
        lines.append(
            f"{where}: fastest at {best.chunks} chunks ({best.time.median:.3f} s); {verdict}."
        )
    return lines
