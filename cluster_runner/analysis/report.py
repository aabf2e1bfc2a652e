"""Scaling reports: tables and conclusions in words, in every output format.

``runner report`` (and the summary at the end of ``runner scale``) renders an
:class:`~cluster_runner.analysis.aggregate.Experiment` in one of :data:`FORMATS`; the words are
:func:`.words.conclusions`. Every interval is labelled with the level it really reaches (a
column header such as ``75% CI`` when all rows share one, else the level in each cell), a size
with more workers than the machine's CPUs is marked ``*``, and ``json`` holds every figure as a
number: levels, intervals, the fitted laws' coefficients with their intervals, the chosen law,
the verdicts and the warnings as items. When the runs had driver inputs (issue 21), every format
has what moved (:mod:`.transfer`): bytes and the put time with its share of the run, the
``--transfer`` mode in the header; without them, exactly what it had before. The plot lives in
:mod:`.plots`, so that matplotlib is imported only for a plot; what ``runner submit`` prints
lives in :mod:`cluster_runner.console`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cluster_runner.analysis import transfer
from cluster_runner.analysis.intervals import level_text
from cluster_runner.analysis.models import number
from cluster_runner.analysis.words import NOISY_LOAD, conclusions
from cluster_runner.console import number_text as _num
from cluster_runner.console import range_text as _range

if TYPE_CHECKING:
    from cluster_runner.analysis.aggregate import Experiment, PointStats

__all__ = ["FORMATS", "NOISY_LOAD", "conclusions", "csv_report", "json_report", "print_report"]

FORMATS = ("table", "markdown", "csv", "json")

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
    elif exp.mode == "throughput":  # issue 19: the problem grows, the resources stay
        from cluster_runner.analysis.identity import value_text

        key += [
            ("nodes" if any(p.nodes for p in _points(exp)) else "workers",
             lambda p: f"{p.nodes or p.workers}{'*' * p.oversubscribed}"),
            (exp.axis, lambda p: value_text(p.size)),
        ]  # fmt: skip
    else:
        key.append((exp.axis, lambda p: f"{p.size}{'*' * p.oversubscribed}"))
    points = _points(exp)
    time_ci = _ci_column(
        "CI s", [p.time.ci_level for p in points if p.time], lambda p: p.time and p.time.ci_level,
        lambda p: p.time and (p.time.ci_low, p.time.ci_high), ".3f",
    )  # fmt: skip
    times: list[Column] = [
        *key,
        (
            "runs",
            lambda p: f"{p.runs}" + (f" (+{p.cold_left_out} cold)" if p.cold_left_out else ""),
        ),
        ("median s", lambda p: _num(p.time and p.time.median, ".3f", none="not timed")),
        time_ci,
        ("min-max s", lambda p: _range(p.time and (p.time.min, p.time.max), ".3f")),
        ("CV", lambda p: _num(p.cv, ".1%")),
        ("CPU", _cpu),
        ("peak MiB", lambda p: _num(p.peak_rss_bytes, ".0f", 2**-20)),
        ("start-up s", lambda p: _num(p.startup_s, ".2f")),
        ("warm-up s", lambda p: _num(p.warmup_s, ".2f")),
    ]
    moved = transfer.transfer_mode(points)
    if moved is not None:  # issue 21: what moved between the driver and the workers
        times += transfer.columns(moved)
    per_task: list[Column] = [
        ("task ms", lambda p: _num(p.task_s, ".2f", 1e3)),
        ("overhead/task ms", lambda p: _num(p.overhead_s, ".2f", 1e3)),
        ("overhead share", lambda p: _num(p.overhead_share, ".0%")),
    ]
    if exp.axis == "chunks":
        return [("run times", times), ("granularity", [*key, *per_task])]
    if exp.mode == "throughput":
        from cluster_runner.analysis.throughput import columns

        return [("run times", times), ("throughput", [*key, *columns(exp), *per_task])]
    speedup_ci = _ci_column(
        "CI", [p.speedup_level for p in points if p.speedup_level and not p.reference],
        lambda p: None if p.reference else p.speedup_level,
        lambda p: None if p.reference else p.speedup and (p.speedup_low, p.speedup_high), ".2f",
        reference="reference",
    )  # fmt: skip
    scaling: list[Column] = [
        *key,
        ("scaled speedup" if weak else "speedup", lambda p: _num(p.speedup, ".2f")),
        speedup_ci,
        ("weak efficiency" if weak else "efficiency", lambda p: _num(p.efficiency, ".0%")),
    ]
    if not weak:
        scaling.append(("Karp-Flatt", lambda p: _num(p.karp_flatt, ".3f")))
    return [("run times", times), ("scaling", [*scaling, *per_task])]


def _ci_column(name, levels, level_of, bounds_of, spec, reference: str = "") -> Column:
    """An interval column labelled with its level: in the header when every row shares one
    (``75% CI s``), else in each cell (``0.95-1.05 (75%)``). A 1-run point has no interval."""
    shared = {round(v, 6) for v in levels if v}
    one = len(shared) <= 1
    header = f"{level_text(next(iter(shared)))} {name}" if len(shared) == 1 else name
    if not one:
        header += " (level)"

    def cell(p) -> str:
        if reference and p.reference:
            return reference
        level = level_of(p)
        if not level:
            return "-"
        text = _range(bounds_of(p), spec)
        return text if one else f"{text} ({level_text(level)})"

    return header, cell


def _points(exp: Experiment) -> list[PointStats]:
    return [p for s in exp.series for p in s.points]


_FIT_HEADER = ["backend", "law", "coefficients (95% CI)", "AICc", "beyond the sizes measured"]


def fit_rows(exp: Experiment) -> list[list[str]]:
    """Rows of the fits table: every law fitted to each series, the chosen one first.

    Columns: backend, law (``(chosen)`` on the one AICc prefers), its coefficients with their
    intervals (and USL's peak N*), its AICc against the chosen law's, and what the chosen law
    predicts beyond the sizes measured, where it may be extrapolated.
    """
    rows = []
    for s in exp.series:
        if s.fit == "gustafson" and s.gustafson is not None:
            rows.append([s.backend, "Gustafson (weak)", _coefs((s.gustafson,)), "-", _beyond(s)])
            continue
        if s.models is None:
            continue
        delta = dict(s.models.delta_aicc)
        fits = sorted(s.models.fits, key=lambda f: (f.model != s.fit, delta.get(f.model, 1e9)))
        for fit in fits:
            chosen = fit.model == s.fit
            coefs = _coefs(fit.coefficients)
            if fit.peak is not None:
                coefs += f"; N* {fit.peak:.3g}"
            if fit.model not in delta:
                why = "no AICc: too few runs"
            else:
                why = "chosen" if chosen else f"AICc +{delta[fit.model]:.1f}"
            if fit.exactly_determined:
                why += "; exactly determined"
            law = _title(fit.model) + (" (chosen)" if chosen else "")
            rows.append([s.backend, law, coefs, why, _beyond(s) if chosen else ""])
    return rows


def _beyond(s) -> str:
    if s.predictions:
        return ", ".join(f"{v:.2f}x at {n}" for n, v in s.predictions.items())
    return "not extrapolated: too few sizes"


def _title(model: str | None) -> str:
    return {"linear": "linear", "amdahl": "Amdahl", "usl": "USL"}.get(model or "", "-")


def _coefs(coefficients) -> str:
    parts = []
    for c in coefficients:
        if c.name == "gamma":
            continue  # the scale of throughput, not a property of scaling
        ci = "" if c.low is None else f" ({number(c.low)}-{number(c.high)})"
        parts.append(f"{c.name} {number(c.value)}{ci}")
    return "; ".join(parts) or "-"


def headline(exp: Experiment) -> str:
    """One line saying what was measured, where."""
    what = {
        "workers": f"{exp.mode} scaling over workers",
        "nodes": f"{exp.mode} scaling over nodes",
        "chunks": f"granularity ({exp.mode} mode)",
    }
    if exp.mode == "throughput":
        from cluster_runner.analysis.throughput import headline_words

        what[exp.axis] = headline_words(exp)
    return (
        f"{exp.job}: {what[exp.axis]} on {exp.machine}"
        f" ({len(exp.files)} file{'s' * (len(exp.files) != 1)})"
    )


def notes(exp: Experiment) -> list[str]:
    """What the tables' marks and intervals mean."""
    lines = [_CI_NOTE]
    over = [p for p in _points(exp) if p.oversubscribed]
    if over:
        lines.append(f"* more workers than the machine's {over[0].cpus} CPUs: they share cores.")
    if any(p.cpu_driver_only for p in _points(exp)):
        lines.append(_DRIVER_CPU_NOTE)
    return lines + transfer.notes(_points(exp))


#: What a CPU figure marked "(driver)" covers (issue 17: it said nothing).
_DRIVER_CPU_NOTE = (
    "CPU (driver): the workers are on a cluster the runner connected to, so CPU counts only"
    " the driver's processes."
)


def _cpu(point: Any) -> str:
    """The CPU column: the share of the workers' cores, marked where only the driver counted."""
    text = _num(point.cpu_utilisation, ".0%")
    return f"{text} (driver)" if point.cpu_driver_only and text != "-" else text


_CI_NOTE = (
    "Times count timed runs that verified (a cold first run left out). CI: exact order-statistic"
    " interval of the median, labelled with the level these runs reach; for a speedup, the"
    " Hodges-Lehmann interval of the ratio of times (exact Mann-Whitney)."
)


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
            fits.add_row(*(escape(c) for c in row))
        out.print(fits)
    for line in notes(exp):
        out.print(escape(line))
    for line in conclusions(exp):
        out.print(escape(line))


def markdown_report(exp: Experiment) -> str:
    """The ``markdown`` format: a heading, pipe tables and the conclusions as a list."""
    lines = [f"### {headline(exp)}"]
    for title, cols in point_tables(exp):
        rows = [[fmt(p) for _, fmt in cols] for p in _points(exp)]
        lines += ["", f"**{title}**", "", *_pipe_table([name for name, _ in cols], rows)]
    fits = fit_rows(exp)
    if fits:
        lines += ["", "**fits**", "", *_pipe_table(_FIT_HEADER, fits)]
    lines += ["", *notes(exp), "", *(f"- {line}" for line in conclusions(exp))]
    return "\n".join(lines) + "\n"


def pipe_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown pipe table: the header, the alignment row (first column left), the rows."""
    return _pipe_table(header, rows)


def _pipe_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("*", "\\*") for c in cells) + " |"

    align = ["---" if i == 0 else "---:" for i in range(len(header))]
    return [line(header), "| " + " | ".join(align) + " |", *(line(r) for r in rows)]


_CSV_FIELDS = (
    *("backend", "size", "workers", "nodes", "chunks", "factor", "tasks", "runs"),
    *("median_s", "ci_low_s", "ci_high_s", "ci_level", "min_s", "max_s", "cv"),
    *("speedup", "speedup_low", "speedup_high", "speedup_level", "reference"),
    *("efficiency", "karp_flatt", "cpus", "oversubscribed", "cold_left_out"),
    *("cpu_utilisation", "peak_rss_bytes", "task_s", "overhead_s", "overhead_share"),
    *("startup_s", "warmup_s", "not_counted", "problems"),
)


def csv_report(exp: Experiment) -> str:
    """The ``csv`` format: one row per point, plain numbers, for a spreadsheet or pandas."""
    import csv
    import io

    buffer = io.StringIO()
    moved = transfer.has_transfer(exp)
    fields = [*_CSV_FIELDS, *(transfer.CSV_FIELDS if moved else ())]
    writer = csv.DictWriter(buffer, fieldnames=["job", "mode", "axis", *fields])
    writer.writeheader()
    for p in _points(exp):
        row = {k: getattr(p, k) for k in _CSV_FIELDS if hasattr(p, k)}
        if p.time is not None:
            row.update(
                median_s=p.time.median,
                ci_low_s=p.time.ci_low,
                ci_high_s=p.time.ci_high,
                ci_level=p.time.ci_level,
                min_s=p.time.min,
                max_s=p.time.max,
            )
        row["problems"] = "; ".join(p.problems)
        if moved:
            row.update(transfer.csv_fields(p))
        writer.writerow({"job": exp.job, "mode": exp.mode, "axis": exp.axis, **row})
    return buffer.getvalue()


def json_report(exp: Experiment) -> str:
    """The ``json`` format: the whole experiment, every figure as a number, and the words.

    Points carry their intervals with ``ci_level`` and ``speedup_level``; series their
    ``models`` (every law fitted: coefficients with ``low``/``high``/``level``, AICc, ``peak``
    N* with its interval), the chosen ``fit``, ``predictions`` with ``prediction_intervals``
    and the Karp-Flatt ``trend``; the experiment its ``baseline``, the verdicts ``scaling`` and
    ``fastest``, and ``findings``: every warning as ``{kind, where, text, fix}``. A number that
    is not finite is written as null.
    """
    import json

    data = asdict(exp)
    if not transfer.has_transfer(exp):  # no driver inputs: the report as it was before them
        for series in data["series"]:
            for point in series["points"]:
                del point["transfer"]
    data["conclusions"] = conclusions(exp)
    return json.dumps(_finite(data), indent=2, sort_keys=True) + "\n"


def finite(value: Any) -> Any:
    """``value`` with every non-finite float as None, in dicts, lists and tuples: for JSON."""
    return _finite(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
