"""``runner compare A B``: per backend and size, is B faster or slower than A, or cannot we tell?

Users rerun an experiment after changing their code, a library or the cluster and ask "did it
get slower?" (issue 18; as hyperfine and pyperf compare two result sets). Each side is read as
one experiment (:mod:`.sides`); the points both sides timed are compared on the runs a report
counts (warm-ups and cold first runs left out), with the statistics of :mod:`.intervals`:

- the **ratio of medians** ``median(B) / median(A)`` (above 1: B is slower), with the exact
  Hodges-Lehmann interval of the ratio of B's times to A's and the level it really reaches;
- a **verdict** from :func:`.intervals.compare`: "faster" or "slower" only when that interval
  at 95% excludes 1 (the exact two-sided Mann-Whitney test at 5%), else "cannot tell apart",
  with the runs a side would need.

A point is a **regression** when B is slower by that verdict *and* its ratio of medians
exceeds ``1 + tolerance`` (``--tolerance``, 5% by default): a real but small slowdown is
reported and tolerated. ``runner compare`` exits 1 when any point regressed, else 0; a point
that the runs cannot judge ("cannot tell apart" with too few runs) does not fail it, and the
words say so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from cluster_runner.analysis.intervals import ALPHA, compare, level_text

if TYPE_CHECKING:
    from cluster_runner.analysis.aggregate import PointStats
    from cluster_runner.analysis.sides import Side

#: Default --tolerance: a slowdown up to this fraction is not a regression.
TOLERANCE = 0.05


@dataclass(frozen=True)
class PointComparison:
    """One backend at one size (and chunk count) in A and in B."""

    backend: str
    size: int
    chunks: int | None
    a: PointStats | None
    b: PointStats | None
    verdict: str  # faster, slower, cannot tell apart, only in A, only in B, not timed
    ratio: float | None = None  # median(B) / median(A)
    low: float | None = None  # the interval of B's times over A's (Hodges-Lehmann, exact)
    high: float | None = None
    level: float | None = None  # the coverage that interval reaches
    p_value: float | None = None
    regression: bool = False  # slower beyond the tolerance
    words: str = ""

    @property
    def where(self) -> str:
        chunks = f" c{self.chunks}" if self.chunks is not None else ""
        return f"{self.backend} x{self.size}{chunks}"


@dataclass(frozen=True)
class ComparisonReport:
    """What ``runner compare`` prints: the sides, what differs, each point, the outcome."""

    a: Side
    b: Side
    differences: tuple[tuple[str, str, str], ...]  # (what, in A, in B)
    same: tuple[str, ...]
    points: tuple[PointComparison, ...]
    tolerance: float
    alpha: float = ALPHA

    @property
    def regressions(self) -> list[PointComparison]:
        return [p for p in self.points if p.regression]

    @property
    def exit_code(self) -> int:
        """0: nothing slower beyond the tolerance; 1: something is."""
        return 1 if self.regressions else 0


def compare_sides(a: Side, b: Side, tolerance: float = TOLERANCE) -> ComparisonReport:
    """Compare every point of ``a`` and ``b`` (see the module docstring)."""
    from cluster_runner.analysis.sides import check_comparable, differences

    check_comparable(a, b)
    differ, same = differences(a, b)
    pa, pb = _points(a), _points(b)
    keys = list(dict.fromkeys([*pa, *pb]))
    keys.sort(key=lambda k: (k[0], k[1], k[2] or 0))
    rows = tuple(_compare_point(key, pa.get(key), pb.get(key), tolerance) for key in keys)
    if not any(r.ratio is not None for r in rows):
        raise_nothing_shared(a, b, pa, pb)
    return ComparisonReport(a, b, tuple(differ), tuple(same), rows, tolerance)


def raise_nothing_shared(a: Side, b: Side, pa: dict, pb: dict) -> None:
    """One line when no point was timed on both sides: there is nothing to compare."""
    from cluster_runner.errors import UsageError

    def names(points: dict) -> str:
        timed = [f"{k[0]} x{k[1]}" for k, p in points.items() if p.time is not None]
        return ", ".join(timed) or "none"

    raise UsageError(
        f"no point was timed on both sides: {a.label} timed {names(pa)}; {b.label} timed"
        f" {names(pb)}"
    )


def _points(side: Side) -> dict[tuple, PointStats]:
    return {(p.backend, p.size, p.chunks): p for s in side.experiment.series for p in s.points}


def _compare_point(key: tuple, a: PointStats | None, b: PointStats | None, tolerance: float):
    backend, size, chunks = key
    if a is None or b is None:
        verdict = "only in A" if b is None else "only in B"
        return PointComparison(backend, size, chunks, a, b, verdict)
    if a.time is None or b.time is None:
        return PointComparison(backend, size, chunks, a, b, "not timed")
    result = compare(b.samples, a.samples, names=("B", "A"))
    ratio = b.time.median / a.time.median
    regression = result.verdict == "slower" and ratio > 1 + tolerance
    words = result.words
    if result.verdict == "slower" and not regression:
        words += f"; within the {tolerance:.0%} tolerance"
    return PointComparison(
        backend, size, chunks, a, b, result.verdict, ratio, result.ratio.low, result.ratio.high,
        result.ratio.level, result.p_value, regression, words,
    )  # fmt: skip


# --- words and formats -------------------------------------------------------------------------


def summary_lines(report: ComparisonReport) -> list[str]:
    """The outcome in sentences: regressions first, then what is faster, then what cannot be
    told apart and why."""
    tol = f"{report.tolerance:.0%}"
    lines = []
    bad = report.regressions
    if bad:
        lines.append(
            f"B is slower than A beyond the {tol} tolerance at {len(bad)} of"
            f" {_compared(report)} point(s): "
            + "; ".join(f"{p.where} {p.ratio:.3g}x ({_ci(p)})" for p in bad)
            + "."
        )
    else:
        lines.append(
            f"Nothing is slower beyond the {tol} tolerance ({_compared(report)} point(s) compared)."
        )
    for verdict in ("faster", "slower"):
        found = [p for p in report.points if p.verdict == verdict and not p.regression]
        if found:
            lines.append(
                f"B is {verdict} than A"
                + (f" (within the {tol} tolerance)" if verdict == "slower" else "")
                + ": "
                + "; ".join(f"{p.where} {p.ratio:.3g}x ({_ci(p)})" for p in found)
                + "."
            )
    unsure = [p for p in report.points if p.verdict == "cannot tell apart"]
    if unsure:
        short = [p for p in unsure if p.level is not None and p.level < 1 - report.alpha - 1e-9]
        text = "Cannot tell apart: " + "; ".join(f"{p.where} {p.ratio:.3g}x" for p in unsure)
        if short:
            text += (
                f" ({len(short)} of them with too few runs to show any difference at"
                f" {level_text(report.alpha)}: add --repeat)"
            )
        lines.append(text + ".")
    alone = [p for p in report.points if p.verdict.startswith("only") or p.verdict == "not timed"]
    if alone:
        lines.append("Not compared: " + "; ".join(f"{p.where} ({p.verdict})" for p in alone) + ".")
    return lines


def _compared(report: ComparisonReport) -> int:
    return sum(p.ratio is not None for p in report.points)


def _ci(p: PointComparison) -> str:
    if p.low is None or p.level is None:
        return "no interval"
    return f"{level_text(p.level)} CI {p.low:.3g}-{p.high:.3g}"


HEADER = ("backend", "size", "A median s", "B median s", "B/A", "CI of B/A", "verdict")


def table_rows(report: ComparisonReport) -> list[list[str]]:
    """The comparison table's rows, as text (:data:`HEADER`)."""
    rows = []
    for p in report.points:
        a = p.a.time.median if p.a is not None and p.a.time is not None else None
        b = p.b.time.median if p.b is not None and p.b.time is not None else None
        verdict = p.verdict + (" (beyond tolerance)" if p.regression else "")
        size = f"{p.size}" + (f" c{p.chunks}" if p.chunks is not None else "")
        rows.append(
            [
                p.backend,
                size,
                "-" if a is None else f"{a:.4g}",
                "-" if b is None else f"{b:.4g}",
                "-" if p.ratio is None else f"{p.ratio:.3f}",
                _ci(p) if p.ratio is not None else "-",
                verdict,
            ]
        )
    return rows


def print_comparison(report: ComparisonReport, out) -> None:
    """The ``table`` format: the sides, what differs, the table, the outcome."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    for side in (report.a, report.b):
        out.print(escape(f"{side.label}: {side.where} ({len(side.records)} records)"))
    if report.differences:
        diff = Table(title="what differs", title_justify="left", box=box.SIMPLE_HEAD)
        for name in ("", "A", "B"):
            diff.add_column(name)
        for row in report.differences:
            diff.add_row(*(escape(c) for c in row))
        out.print(diff)
    else:
        out.print("what differs: nothing recorded (same job, machine, versions, commit, tags)")
    if report.same:
        out.print(escape("the same in both: " + ", ".join(report.same)))
    table = Table(title="B against A", title_justify="left", box=box.SIMPLE_HEAD)
    for name in HEADER:
        table.add_column(name, justify="left" if name in ("backend", "verdict") else "right")
    for row in table_rows(report):
        table.add_row(*(escape(c) for c in row))
    out.print(table)
    for line in summary_lines(report):
        out.print(escape(line))


def markdown_comparison(report: ComparisonReport) -> str:
    """The ``markdown`` format."""
    from cluster_runner.analysis.report import pipe_table

    lines = [f"### {report.a.records[0].job.name}: B against A", ""]
    lines += [f"- {s.label}: `{s.where}` ({len(s.records)} records)" for s in (report.a, report.b)]
    if report.differences:
        lines += [
            "",
            "**what differs**",
            "",
            *pipe_table(["", "A", "B"], [list(r) for r in report.differences]),
        ]
    lines += ["", *pipe_table(list(HEADER), table_rows(report)), ""]
    lines += [f"- {line}" for line in summary_lines(report)]
    return "\n".join(lines) + "\n"


def json_comparison(report: ComparisonReport) -> str:
    """The ``json`` format: every figure as a number, the verdicts, the exit code."""
    import json

    from cluster_runner.analysis.report import finite

    def point(p: PointComparison) -> dict[str, Any]:
        def side(s: PointStats | None) -> dict[str, Any] | None:
            if s is None:
                return None
            t = s.time
            found = {
                "runs": s.runs,
                "median_s": t.median if t else None,
                "ci_low_s": t.ci_low if t else None,
                "ci_high_s": t.ci_high if t else None,
                "ci_level": t.ci_level if t else None,
                "samples": list(s.samples),
            }
            if s.transfer is not None:  # driver inputs (issue 21): what moved, as numbers
                found["transfer"] = asdict(s.transfer)
            return found

        return {
            "backend": p.backend, "size": p.size, "chunks": p.chunks, "verdict": p.verdict,
            "ratio": p.ratio, "ratio_low": p.low, "ratio_high": p.high, "ratio_level": p.level,
            "p_value": p.p_value, "regression": p.regression, "words": p.words,
            "a": side(p.a), "b": side(p.b),
        }  # fmt: skip

    data = {
        "job": report.a.records[0].job.name,
        "a": {"files": list(report.a.files), "records": len(report.a.records)},
        "b": {"files": list(report.b.files), "records": len(report.b.records)},
        "differences": [{"what": w, "a": x, "b": y} for w, x, y in report.differences],
        "same": list(report.same),
        "tolerance": report.tolerance,
        "alpha": report.alpha,
        "points": [point(p) for p in report.points],
        "regressions": len(report.regressions),
        "exit_code": report.exit_code,
        "conclusions": summary_lines(report),
    }
    return json.dumps(finite(data), indent=2, sort_keys=True) + "\n"
