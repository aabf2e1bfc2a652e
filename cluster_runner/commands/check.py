"""``runner baseline save`` and ``runner check``: a project's expected scaling, and the guard."""

from __future__ import annotations

import click

from cluster_runner.cli import FullHelpGroup
from cluster_runner.commands.compare import select_options
from cluster_runner.commands.options import Finite, SafePath


def _records(results, selects):
    """``(file, record)`` of the results files (or folders), those tagged ``selects`` only."""
    import warnings

    from cluster_runner.errors import ResultsFileError
    from cluster_runner.results import read_records, results_files
    from cluster_runner.results.provenance import parse_tags

    wanted = parse_tags(selects, "--select")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = [str(f) for f in results_files(results)]
        tagged = [(f, r) for f in files for r in read_records([f])]
    for warning in caught:
        click.echo(f"runner: warning: {warning.message}", err=True)
    if not tagged:
        raise ResultsFileError(f"{', '.join(files)}: the results files hold no runs")
    chosen = [(f, r) for f, r in tagged if all(r.tags.get(k) == v for k, v in wanted.items())]
    if not chosen:
        asked = " ".join(f"{k}={v}" for k, v in wanted.items())
        raise ResultsFileError(f"no runs tagged {asked} in {', '.join(files)}")
    return chosen, files


@click.group(cls=FullHelpGroup)  # whole summaries in --help, not cut with "..."
def baseline() -> None:
    """Save what a project expects of its scaling, for 'runner check' to guard.

    \b
    Example:
      runner baseline save results/sweep.jsonl --to baselines/primes.toml
      runner check results/new.jsonl --baseline baselines/primes.toml
    """


@baseline.command("save")
@click.argument("results", nargs=-1, required=True, metavar="RESULTS...")
@click.option(
    "--to",
    "to",
    type=SafePath(dir_okay=False),
    required=True,
    metavar="FILE.toml",
    help="The baseline file to write (TOML).",
)
@click.option(
    "--tolerance",
    type=Finite(0.0, 1000.0, unit="percent"),
    default=5.0,
    show_default=True,
    metavar="PERCENT",
    help="The tolerance 'runner check' applies unless told otherwise.",
)
@select_options
def save(results, to, tolerance, selects) -> int:
    """Write per job, backend and size the median run time and its interval to FILE.toml.

    \b
    Example:
      runner baseline save results/primes-local-*.jsonl --to baselines/primes.toml
    """
    from cluster_runner.analysis.expectations import baseline_text, expectations, save_baseline

    tagged, files = _records(results, selects)
    points = expectations(tagged)
    path = save_baseline(to, baseline_text(points, tolerance / 100, files))
    jobs = sorted({p.job for p in points})
    click.echo(f"baseline: {len(points)} point(s) of {', '.join(jobs)} written to {path}")
    return 0


@click.command()
@click.argument("results", nargs=-1, required=True, metavar="RESULTS...")
@click.option(
    "--baseline",
    "baseline_file",
    type=SafePath(dir_okay=False),
    required=True,
    metavar="FILE.toml",
    help="A baseline written by 'runner baseline save'.",
)
@click.option(
    "--tolerance",
    type=Finite(0.0, 1000.0, unit="percent"),
    default=None,
    metavar="PERCENT",
    help="How far above the baseline's upper bound a median may be [default: the file's]",
)
@select_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table: for a terminal or a CI log; json: for tools.",
)
def check(results, baseline_file, tolerance, selects, fmt) -> int:
    """Pass or fail each point of RESULTS against a baseline; exit 1 if any fails.

    A point passes when its median is at most the baseline's upper bound plus the tolerance;
    it fails when it is above, or when none of its runs verified. Exit 2 for bad input (a
    baseline of another job, a file that is not a baseline).

    \b
    Example:
      runner check results/ --baseline baselines/primes.toml --tolerance 10
    """
    from cluster_runner.analysis.expectations import check_results, read_baseline

    expected = read_baseline(baseline_file)
    tagged, _ = _records(results, selects)
    report = check_results(tagged, expected, None if tolerance is None else tolerance / 100)
    if fmt == "json":
        _print_json(report)
    else:
        _print_table(report)
    return report.exit_code


def _print_table(report) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from cluster_runner.console import console

    out = console()
    table = Table(
        title=f"against {report.baseline} (tolerance {report.tolerance:.0%})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for name in ("point", "baseline s", "median s", "limit s", "status", "why"):
        table.add_column(name, justify="left" if name in ("point", "status", "why") else "right")
    mark = {"pass": "[green]pass[/]", "faster": "[green]faster[/]", "fail": "[red]FAIL[/]"}
    for r in report.rows:
        base = r.expected.median if r.expected else None
        table.add_row(
            escape(r.where),
            "-" if base is None else f"{base:.4g}",
            "-" if r.median is None else f"{r.median:.4g}",
            "-" if r.limit is None else f"{r.limit:.4g}",
            mark.get(r.status, r.status),
            escape(r.why),
        )
    out.print(table)
    failed = len(report.failures)
    checked = sum(r.status in ("pass", "faster", "fail") for r in report.rows)
    out.print(
        f"{failed} of {checked} point(s) failed" if failed else f"all {checked} point(s) passed"
    )


def _print_json(report) -> None:
    from dataclasses import asdict

    from cluster_runner.console import print_json

    print_json(
        {
            "baseline": report.baseline,
            "tolerance": report.tolerance,
            "rows": [asdict(r) for r in report.rows],
            "failures": len(report.failures),
            "exit_code": report.exit_code,
        }
    )
