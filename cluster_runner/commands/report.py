"""``runner report``: aggregate results files into a scaling table, words, and a plot."""

from __future__ import annotations

import click


@click.command()
@click.argument("results", nargs=-1, required=True, metavar="RESULTS...")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "markdown", "csv", "json"]),
    default="table",
    show_default=True,
    help="table: for a terminal; markdown: for an issue or a README; csv and json: for tools.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE.png",
    help="Also draw speedup and efficiency against size, one line per backend, to FILE.",
)
def report(results, fmt, plot) -> int:
    """Aggregate results files (or folders of them): one row per backend x size.

    Only runs of one experiment are compared (same job spec, mode, machine and cluster);
    files of different experiments are refused, not mixed. Warm-ups are left out and runs
    that did not verify are counted apart.

    \b
    Examples:
      runner report results/primes-local+dask+ray-*.jsonl --plot scaling.png
      runner report results/sweep.jsonl --format markdown
    """
    import warnings

    from cluster_runner.analysis.aggregate import aggregate
    from cluster_runner.analysis.report import (
        csv_report,
        json_report,
        markdown_report,
        print_report,
    )
    from cluster_runner.console import console

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        experiment = aggregate(results)
    for warning in caught:  # one line each, like errors (click.echo does not wrap)
        click.echo(f"runner: warning: {warning.message}", err=True)
    if fmt == "table":
        print_report(experiment, console())
    else:
        render = {"markdown": markdown_report, "csv": csv_report, "json": json_report}[fmt]
        click.echo(render(experiment), nl=False)
    if plot:
        import sys

        from cluster_runner.analysis.plots import plot_experiment

        sys.stdout.flush()
        written = plot_experiment(experiment, plot)
        click.echo(f"plot: {written}", err=True)
    return 0
