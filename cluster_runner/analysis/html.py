"""The report as one HTML page that opens anywhere, offline: ``runner report --html``.

benchopt publishes an HTML page per benchmark; this is cluster-runner's (issue 18). One file,
nothing fetched: no script, no stylesheet or font from a CDN, every figure inline SVG drawn by
matplotlib (text kept as text, so the page stays small and searchable; a timeline of many tasks
as a PNG in a ``data:`` URI instead, lighter than thousands of SVG rectangles). What it holds:

- the headline and the conclusions in words (:func:`.words.conclusions`);
- the speedup and efficiency plot with the fitted laws and their bands (:mod:`.plots`), and
  run time against size with the law as a time;
- the tables of the terminal report, and the fits;
- the environment the runs had (machine, Python, packages, engines, commit, tags);
- for chosen runs, a timeline (:mod:`.timeline`): a row per worker, a bar per task;
- links to the engines' own traces that ``--profile`` kept next to the results files.

``runner compare --html`` writes the same kind of page for two result sets
(:func:`write_comparison_page`): what differs, each point's ratio with its interval and
verdict, and the environment of each side.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import os
import re
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from cluster_runner.errors import UsageError

if TYPE_CHECKING:
    from cluster_runner.analysis.aggregate import Experiment
    from cluster_runner.analysis.compare import ComparisonReport
    from cluster_runner.results import RunRecord

#: A timeline of more tasks than this is embedded as a PNG rather than as SVG.
SVG_TASKS = 1500

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1280px;
       padding: 0 24px 48px; color: #1d1d1f; }
h1 { font-size: 1.5em; margin: 24px 0 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; }
.sub { color: #555; margin: 0; } nav a { margin-right: 14px; }
table { border-collapse: collapse; margin: 10px 0 18px; font-size: 13px; }
th, td { border: 1px solid #d5d5d5; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
td.text { text-align: left; } .fail { color: #b00020; font-weight: 600; }
.pass { color: #146c2e; } figure { margin: 12px 0 24px; }
figure svg, figure img { max-width: 100%; height: auto; display: block; }
figure.timeline svg, figure.timeline img { width: 100%; } table.text th { text-align: left; }
figcaption { color: #555; font-size: 13px; } ul.words li { margin: 3px 0; }
.note { color: #555; font-size: 13px; }
"""


def write_report_page(
    exp: Experiment,
    path: str | Path,
    *,
    environment: Sequence[tuple[str, str]] = (),
    timelines: Sequence[RunRecord] = (),
    profiles: Sequence[Path] = (),
) -> Path:
    """Write the report of ``exp`` as one HTML file (see the module docstring)."""
    from cluster_runner.analysis.plots import scaling_figure, time_figure
    from cluster_runner.analysis.report import fit_rows, headline, notes, point_tables
    from cluster_runner.analysis.words import conclusions

    path = Path(path)
    body = [
        f"<h1>{escape(headline(exp))}</h1>",
        f'<p class="sub">{escape(", ".join(exp.files))}</p>',
        _nav(["conclusions", "plots", "tables", "timelines", "environment", "traces"]),
        '<h2 id="conclusions">Conclusions</h2>',
        _words(conclusions(exp)),
        '<h2 id="plots">Scaling</h2>',
        _figure(scaling_figure(exp), "plot", "speedup and efficiency against size; the chosen"
                " law solid with its confidence band, dotted where it is extrapolated"),
    ]  # fmt: skip
    times = time_figure(exp)
    if times is not None:
        body.append(_figure(times, "plot", "median run time with its interval; the law as a time"))
    body.append('<h2 id="tables">Tables</h2>')
    points = [p for s in exp.series for p in s.points]
    for title, columns in point_tables(exp):
        body.append(f"<h3>{escape(title)}</h3>")
        body.append(_table([n for n, _ in columns], [[f(p) for _, f in columns] for p in points]))
    fits = fit_rows(exp)
    if fits:
        body.append("<h3>fits</h3>")
        body.append(
            _table(["backend", "law", "coefficients (95% CI)", "AICc", "beyond"], fits, text=True)
        )
    body += [f'<p class="note">{escape(line)}</p>' for line in notes(exp)]
    body.append('<h2 id="timelines">Timelines</h2>')
    body.append(_timelines(timelines))
    body.append('<h2 id="environment">Environment</h2>')
    body.append(_table(["", "value"], [list(row) for row in environment], text=True))
    body.append('<h2 id="traces">Engine traces</h2>')
    body.append(_links(profiles, path))
    return _write(path, f"{exp.job}: scaling report", body)


def write_comparison_page(report: ComparisonReport, path: str | Path) -> Path:
    """``runner compare --html``: the comparison of two result sets as one HTML file."""
    from cluster_runner.analysis.compare import HEADER, summary_lines, table_rows
    from cluster_runner.analysis.sides import environment_rows

    path = Path(path)
    job = report.a.records[0].job.name
    env_a = dict(environment_rows(report.a.records))
    env_b = dict(environment_rows(report.b.records))
    differ = {what for what, _, _ in report.differences}
    env_rows = [[w, env_a.get(w, "-"), env_b.get(w, "-")] for w in dict.fromkeys([*env_a, *env_b])]
    rows = table_rows(report)
    body = [
        f"<h1>{escape(job)}: B against A</h1>",
        f'<p class="sub">A: {escape(report.a.where)}<br>B: {escape(report.b.where)}</p>',
        "<h2>Conclusions</h2>",
        _words(summary_lines(report)),
        "<h2>What differs</h2>",
        _table(["", "A", "B"], [list(r) for r in report.differences], text=True)
        if report.differences
        else '<p class="note">nothing recorded differs</p>',
        "<h2>Points</h2>",
        _table(list(HEADER), rows, marks={len(HEADER) - 1: _verdict_class}),
        _figure(_ratio_figure(report), "plot", "B/A per point with its interval"),
        "<h2>Environment of each side</h2>",
        _table(["", "A", "B"], env_rows, text=True, bold={i for i, r in enumerate(env_rows)
                                                          if r[0] in differ}),
    ]  # fmt: skip
    return _write(path, f"{job}: B against A", body)


def _verdict_class(text: str) -> str:
    return "fail" if "beyond" in text else "pass" if text == "faster" else ""


def _ratio_figure(report: ComparisonReport):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in report.points if p.ratio is not None]
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.35 * len(points)), layout="constrained")
    for i, p in enumerate(points):
        colour = "tab:red" if p.regression else "tab:green" if p.verdict == "faster" else "0.3"
        err = [[p.ratio - p.low], [p.high - p.ratio]] if p.low is not None else None
        ax.errorbar([p.ratio], [i], xerr=err, fmt="o", color=colour, capsize=3)
    ax.axvline(1.0, color="k", linewidth=1)
    ax.axvline(1 + report.tolerance, color="tab:red", linestyle=":", linewidth=1,
               label=f"+{report.tolerance:.0%} tolerance")  # fmt: skip
    ax.set_yticks(range(len(points)), [p.where for p in points])
    ax.invert_yaxis()
    ax.set_xlabel("time B / time A (above 1: B is slower)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


# --- pieces -----------------------------------------------------------------------------------


def _write(path: Path, title: str, body: list[str]) -> Path:
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + f'\n<p class="note">Written by cluster-runner on {stamp}.</p>\n</body>\n</html>\n'
    )
    if path.is_dir():
        raise UsageError(f"--html {path} is a folder: name the HTML file, e.g. report.html")
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the HTML report to {path}: {exc.strerror or exc}") from None
    return path


def _nav(sections: list[str]) -> str:
    return "<nav>" + "".join(f'<a href="#{s}">{s}</a>' for s in sections) + "</nav>"


def _words(lines: Sequence[str]) -> str:
    return '<ul class="words">' + "".join(f"<li>{escape(x)}</li>" for x in lines if x) + "</ul>"


def _table(header, rows, *, text: bool = False, marks=None, bold=frozenset()) -> str:
    """An HTML table; ``text`` aligns every cell left; ``marks`` maps a column to a function
    of the cell giving its CSS class; ``bold`` holds rows to emphasise."""
    marks = marks or {}
    cls = ' class="text"' if text else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    lines = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            mark = marks[j](cell) if j in marks else ""
            klass = f' class="{mark}"' if mark else cls
            cells.append(f"<td{klass}>{escape(str(cell))}</td>")
        style = ' style="font-weight:600"' if i in bold else ""
        lines.append(f"<tr{style}>{''.join(cells)}</tr>")
    table = '<table class="text">' if text else "<table>"
    return f"{table}<thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _figure(fig, kind: str, caption: str, png: bool = False) -> str:
    """A matplotlib figure, closed here, as inline SVG (or a PNG ``data:`` URI) in a figure."""
    import matplotlib.pyplot as plt

    try:
        if png:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=110)
            data = base64.b64encode(buffer.getvalue()).decode("ascii")
            image = f'<img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
        else:
            text = io.StringIO()
            with plt.rc_context({"svg.fonttype": "none"}):  # text as text, not glyph paths
                fig.savefig(text, format="svg")
            svg = text.getvalue()
            svg = re.sub(r"<metadata>.*?</metadata>", "", svg, count=1, flags=re.S)  # RDF
            image = svg[svg.index("<svg") :].replace("<svg", f'<svg class="{kind}"', 1)
    finally:
        plt.close(fig)
    return f'<figure class="{kind}">{image}<figcaption>{escape(caption)}</figcaption></figure>'


def _timelines(records: Sequence[RunRecord]) -> str:
    from cluster_runner.analysis.timeline import figure, layout

    if not records:
        return '<p class="note">No run with task times was chosen (runner report --timeline RUN_ID).</p>'  # noqa: E501
    parts = [
        '<p class="note">One row per worker, one bar per task, coloured by stage; grey bands:'
        " each stage from the driver's first submit to its value in the driver; red hatched:"
        " rerun after losing its worker; orange edge: straggler; black edge: a task alone of"
        " its kind (a reduce).</p>"
    ]
    for record in records:
        view = layout(record)
        parts.append(_figure(figure(view), "timeline", view.title, png=len(view.bars) > SVG_TASKS))
    return "".join(parts)


def _links(files: Sequence[Path], page: Path) -> str:
    if not files:
        return '<p class="note">None kept: run submit or scale with --profile to keep them.</p>'
    items = []
    for f in files:
        href = os.path.relpath(f, page.resolve().parent).replace(os.sep, "/")
        kind = "Dask performance report" if f.suffix == ".html" else "Ray timeline (Chrome trace)"
        items.append(f'<li><a href="{escape(href)}">{escape(f.name)}</a> ({kind})</li>')
    return "<ul>" + "".join(items) + "</ul>"
