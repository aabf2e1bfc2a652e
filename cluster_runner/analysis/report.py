"""Scaling reports: tables and conclusions in words, in every output format.

``runner report`` (and the summary at the end of ``runner scale``) renders an
:class:`~cluster_runner.analysis.aggregate.Experiment` in one of :data:`FORMATS`, and says in
words what the figures show (:func:`conclusions`). The plot lives in
:mod:`cluster_runner.analysis.plots`, so that matplotlib is imported only for a plot; what
``runner submit`` prints lives in :mod:`cluster_runner.console`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cluster_runner.console import number_text as _num
from cluster_runner.console import range_text as _range

if TYPE_CHECKING:
    from cluster_runner.analysis.aggregate import Experiment, PointStats, Series


# --- Scaling reports (``runner report``, and the summary ``runner scale`` ends with) ----------

FORMATS = ("table", "markdown", "csv", "json")

_AXIS_WORDS = {"workers": "workers", "nodes": "nodes", "chunks": "chunks"}
#: Percent of the CPUs that other processes may use before a report warns of noisy times.
NOISY_LOAD = 20.0


Column = tuple[str, Callable[["PointStats"], str]]


def point_tables(exp: Experiment) -> list[tuple[str, list[Column]]]:
    """The tables of points for this experiment's axis and mode: ``(title, columns)``.

    Two narrow tables rather than one too wide for a terminal: what each run cost, and how
    the points scale (or, on the chunks axis, how much of the workers' time went to overhead).
    """
    weak = exp.mode == "weak"
    key: list[Column] = [("backend", lambda p: p.backend)]
    if exp.axis == "chunks":
        key += [
            ("nodes" if exp.series and exp.series[0].points[0].nodes else "workers",
             lambda p: str(p.nodes or p.workers)),
            ("chunks", lambda p: str(p.chunks)),
            ("tasks", lambda p: str(p.tasks)),
        ]  # fmt: skip
    else:
        key.append((exp.axis, lambda p: str(p.size)))
    times: list[Column] = [
        *key,
        ("runs", lambda p: str(p.runs)),
        ("median s", lambda p: _num(p.time and p.time.median, ".3f", none="not timed")),
        ("95% CI s", lambda p: _range(p.time and (p.time.ci_low, p.time.ci_high), ".3f")),
        ("min-max s", lambda p: _range(p.time and (p.time.min, p.time.max), ".3f")),
        ("CPU", lambda p: _num(p.cpu_utilisation, ".0%")),
        ("peak MiB", lambda p: _num(p.peak_rss_bytes, ".0f", 2**-20)),
        ("start-up s", lambda p: _num(p.startup_s, ".2f")),
    ]
    per_task: list[Column] = [
        ("task ms", lambda p: _num(p.task_s, ".2f", 1e3)),
        ("overhead/task ms", lambda p: _num(p.overhead_s, ".2f", 1e3)),
        ("overhead share", lambda p: _num(p.overhead_share, ".0%")),
    ]
    if exp.axis == "chunks":
        return [("run times", times), ("granularity", [*key, *per_task])]
    scaling: list[Column] = [
        *key,
        ("scaled speedup" if weak else "speedup", lambda p: _num(p.speedup, ".2f")),
        ("95% CI", lambda p: _range(p.speedup and (p.speedup_low, p.speedup_high), ".2f")),
        ("weak efficiency" if weak else "efficiency", lambda p: _num(p.efficiency, ".0%")),
    ]
    if not weak:
        scaling.append(("Karp-Flatt", lambda p: _num(p.karp_flatt, ".3f")))
    return [("run times", times), ("scaling", [*scaling, *per_task])]


def _points(exp: Experiment) -> list[PointStats]:
    return [p for s in exp.series for p in s.points]


def fit_rows(exp: Experiment) -> list[list[str]]:
    """Rows of the fits table: backend, law, serial fraction, error, predictions."""
    rows = []
    for s in exp.series:
        if s.fit is None:
            continue
        predicted = ", ".join(f"{v:.2f}x at {n}" for n, v in s.predictions.items())
        rows.append(
            [
                s.backend,
                s.fit.capitalize(),
                f"{s.serial_fraction:.3f}",
                _num(s.fit_error, ".1%"),
                predicted,
            ]
        )
    return rows


_FIT_HEADER = ["backend", "law", "serial fraction", "fit rms error", "predicted speedup"]


def headline(exp: Experiment) -> str:
    """One line saying what was measured, where."""
    what = {
        "workers": f"{exp.mode} scaling over workers",
        "nodes": f"{exp.mode} scaling over nodes",
        "chunks": f"granularity ({exp.mode} mode)",
    }
    return (
        f"{exp.job}: {what[exp.axis]} on {exp.machine}"
        f" ({len(exp.files)} file{'s' * (len(exp.files) != 1)})"
    )


def conclusions(exp: Experiment) -> list[str]:
    """What the figures say, in sentences: who scales best, where efficiency falls, noise."""
    if not any(s.timed for s in exp.series):
        lines = ["No timed run verified: there are no times to compare."]
    elif exp.axis == "chunks":
        lines = _granularity_lines(exp)
    else:
        lines = _scaling_lines(exp)
    ups = [(s.backend, p.startup_s) for s in exp.series for p in s.points if p.startup_s]
    if ups:
        by_backend: dict[str, list[float]] = {}
        for name, value in ups:
            by_backend.setdefault(name, []).append(value)
        parts = ", ".join(f"{b} {_range((min(v), max(v)), '.2f')} s" for b, v in by_backend.items())
        lines.append(f"Start-up, not included in the run times: {parts}.")
    busy = [p for p in _points(exp) if p.other_load is not None and p.other_load > NOISY_LOAD]
    if busy:
        worst = max(busy, key=lambda p: p.other_load)
        lines.append(
            f"Other processes used up to {worst.other_load:.0f}% of the CPUs just before the"
            f" {worst.size}-{'node' if exp.axis == 'nodes' else 'worker'} points were timed:"
            " expect noisy times, and trust only differences whose intervals say they are real."
        )
    short = [p for p in _points(exp) if p.time and p.time.median < 0.5 and p.cpu_utilisation]
    if short:
        lines.append(
            "CPU use (whole process tree, share of the workers' cores) is coarse for runs"
            " under 0.5 s: the OS counts CPU time in 10 ms ticks."
        )
    for p in _points(exp):
        if p.problems:
            lines.append(
                f"{p.backend} at {_at(exp, p)}: {p.not_counted} run(s) not counted:"
                f" {'; '.join(p.problems)}"
            )
    return lines


def _at(exp: Experiment, p: PointStats) -> str:
    if exp.axis == "chunks":
        return f"{p.chunks} chunks"
    return f"{p.size} {_AXIS_WORDS[exp.axis]}"


def _scaling_lines(exp: Experiment) -> list[str]:
    word = _AXIS_WORDS[exp.axis]
    kind = "scaled speedup" if exp.mode == "weak" else "speedup"
    scalable = [s for s in exp.series if len(s.timed) >= 2]
    if not scalable:
        return ["Only one size was timed per backend: there is no speedup to report."]
    lines = []
    sizes = set.intersection(*({p.size for p in s.timed} for s in scalable))
    top = max(sizes) if len(sizes) >= 2 else None
    if top is None:
        best = max(scalable, key=lambda s: s.timed[-1].speedup or 0)
        p = best.timed[-1]
        lines.append(
            f"Scales best (at different largest sizes): {best.backend}, {kind} {p.speedup:.2f}x"
            f" at {p.size} {word}."
        )
    else:
        ranked = sorted(scalable, key=lambda s: -_at_size(s, top).speedup)
        best, p = ranked[0], _at_size(ranked[0], top)
        fit = (
            f", {best.fit.capitalize()} serial fraction {best.serial_fraction:.3f}"
            if best.serial_fraction is not None
            else ""
        )
        lines.append(
            f"Scales best: {best.backend}, {kind} {p.speedup:.2f}x at {top} {word}"
            f" ({p.efficiency:.0%} efficient{fit})."
        )
        if len(ranked) > 1:
            q = _at_size(ranked[1], top)
            apart = p.speedup_low > q.speedup_high
            lines.append(
                f"Next: {ranked[1].backend} at {q.speedup:.2f}x; the 95% intervals"
                f" [{p.speedup_low:.2f}-{p.speedup_high:.2f}] and"
                f" [{q.speedup_low:.2f}-{q.speedup_high:.2f}]"
                + (
                    " do not overlap: a real difference."
                    if apart
                    else " overlap: these runs cannot tell their scaling apart."
                )
            )
    lines.extend(_fastest_line(exp, word))
    drops = []
    for s in exp.series:
        low = [p for p in s.timed if p.efficiency is not None and p.efficiency < 0.5]
        if low:
            drops.append(f"{s.backend} from {low[0].size} {word} ({low[0].efficiency:.0%})")
    if drops:
        lines.append("Efficiency drops below 50%: " + "; ".join(drops) + ".")
    else:
        lines.append("Efficiency stays at or above 50% at every point measured.")
    return lines


def _at_size(series: Series, size: int) -> PointStats:
    return next(p for p in series.timed if p.size == size)


def _fastest_line(exp: Experiment, word: str) -> list[str]:
    """Which backend is fastest at the largest size two of them share, and is it real."""
    from cluster_runner.analysis.metrics import interval_excludes, ratio_ci

    if len(exp.series) < 2:
        return []
    by_size: dict[int, list[PointStats]] = {}
    for s in exp.series:
        for p in s.timed:
            by_size.setdefault(p.size, []).append(p)
    shared = [n for n, ps in by_size.items() if len(ps) >= 2]
    if not shared:
        return []
    n = max(shared)
    fast, second = sorted(by_size[n], key=lambda p: p.time.median)[:2]
    ratio, low, high = ratio_ci(second.samples, fast.samples)
    verdict = (
        "a real difference" if interval_excludes(low, high) else "within the noise of these runs"
    )
    return [
        f"Fastest at {n} {word}: {fast.backend} ({fast.time.median:.3f} s), {ratio:.2f}x"
        f" faster than {second.backend} (95% CI {low:.2f}-{high:.2f}x: {verdict})."
    ]


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


def print_report(exp: Experiment, out: Console) -> None:
    """The ``table`` format: rich tables and the conclusions."""
    out.print(f"[bold]{escape(headline(exp))}[/]")
    for title, cols in point_tables(exp):
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
        for name, _ in cols:
            table.add_column(name, justify="left" if name == "backend" else "right")
        for p in _points(exp):
            table.add_row(*(escape(fmt(p)) for _, fmt in cols))
        out.print(table)
    rows = fit_rows(exp)
    if rows:
        fits = Table(title="fits", title_justify="left", box=box.SIMPLE_HEAD)
        for name in _FIT_HEADER:
            fits.add_column(name)
        for row in rows:
            fits.add_row(*row)
        out.print(fits)
    out.print(_CI_NOTE)
    for line in conclusions(exp):
        out.print(escape(line))


_CI_NOTE = (
    "Times count timed runs that verified; 95% CI: bootstrap interval of the median"
    " (of the ratio of medians, for a speedup)."
)


def markdown_report(exp: Experiment) -> str:
    """The ``markdown`` format: a heading, pipe tables and the conclusions as a list."""
    lines = [f"### {headline(exp)}"]
    for title, cols in point_tables(exp):
        rows = [[fmt(p) for _, fmt in cols] for p in _points(exp)]
        lines += ["", f"**{title}**", "", *_pipe_table([name for name, _ in cols], rows)]
    fits = fit_rows(exp)
    if fits:
        lines += ["", "**fits**", "", *_pipe_table(_FIT_HEADER, fits)]
    lines += ["", _CI_NOTE, "", *(f"- {line}" for line in conclusions(exp))]
    return "\n".join(lines) + "\n"


def _pipe_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---" if i == 0 else "---:" for i in range(len(header))]
    return [line(header), "| " + " | ".join(align) + " |", *(line(r) for r in rows)]


_CSV_FIELDS = (
    *("backend", "size", "workers", "nodes", "chunks", "factor", "tasks", "runs"),
    *("median_s", "ci_low_s", "ci_high_s", "min_s", "max_s"),
    *("speedup", "speedup_low", "speedup_high", "efficiency", "karp_flatt"),
    *("cpu_utilisation", "peak_rss_bytes", "task_s", "overhead_s", "overhead_share"),
    *("startup_s", "not_counted", "problems"),
)


def csv_report(exp: Experiment) -> str:
    """The ``csv`` format: one row per point, plain numbers, for a spreadsheet or pandas."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["job", "mode", "axis", *_CSV_FIELDS])
    writer.writeheader()
    for p in _points(exp):
        row = {k: v for k, v in asdict(p).items() if k in _CSV_FIELDS}
        if p.time is not None:
            row.update(
                median_s=p.time.median,
                ci_low_s=p.time.ci_low,
                ci_high_s=p.time.ci_high,
                min_s=p.time.min,
                max_s=p.time.max,
            )
        row["problems"] = "; ".join(p.problems)
        writer.writerow({"job": exp.job, "mode": exp.mode, "axis": exp.axis, **row})
    return buffer.getvalue()


def json_report(exp: Experiment) -> str:
    """The ``json`` format: the whole experiment, every figure, and the conclusions."""
    import json

    data = asdict(exp)
    data["conclusions"] = conclusions(exp)
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
