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
@click.option(
    "--baseline",
    default=None,
    metavar="serial|BACKEND@N|own",
    help="The speedup's reference: serial (serial at 1 worker), BACKEND@N (e.g. local@1,"
    " dask@4: that backend at N workers, or nodes), or own (each backend against its own"
    " smallest size) [default: the sweep's --baseline, else serial when timed, else own].",
)
@click.option(
    "--html",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE.html",
    help="Also write the whole report as one HTML page that opens offline: tables, plots"
    " with the fitted laws, the words, the environment, task timelines, engine traces.",
)
@click.option(
    "--timeline",
    "timelines",
    multiple=True,
    metavar="RUN_ID",
    help="A run to draw as a timeline (a row per worker, a bar per task): with --plot, as an"
    " image instead of the scaling plot; with --html, in the page (repeatable; default there:"
    " each backend's median run at its largest size). A prefix of the id will do.",
)
def report(results, fmt, plot, baseline, html=None, timelines=()) -> int:
    """Aggregate results files (or folders of them): one row per backend x size.

    Only runs of one experiment are compared (same job spec, mode, machine, cluster and
    --transfer mode); files of different experiments are refused, not mixed. Warm-ups are
    left out and runs that did not verify are counted apart. Every interval is labelled with
    the level it reaches (75% with 3 runs); --format json holds every figure as a number.
    Runs with driver inputs get transfer columns: bytes moved, and the driver's put time
    with its share of the run.

    \b
    Examples:
      runner report results/primes-local+dask+ray-*.jsonl --plot results/scaling.png
      runner report results/sweep.jsonl --format markdown
      runner report results/ --baseline serial --format json
      runner report results/sweep.jsonl --html results/report.html
      runner report results/sweep.jsonl --timeline 3f2a9c --plot timeline.png
    """
    import warnings

    from cluster_runner.analysis.aggregate import aggregate
    from cluster_runner.analysis.baseline import parse_baseline
    from cluster_runner.analysis.report import (
        csv_report,
        json_report,
        markdown_report,
        print_report,
    )
    from cluster_runner.console import console

    if baseline is not None:
        parse_baseline(baseline)  # a bad spelling fails before any file is read
    if timelines and not (plot or html):
        from cluster_runner.errors import UsageError

        raise UsageError("--timeline draws with --plot FILE.png or --html FILE.html")
    if plot and len(timelines) > 1:
        from cluster_runner.errors import UsageError

        raise UsageError("--plot draws one --timeline; give one run id, or use --html")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        experiment = aggregate(results, baseline)
    for warning in caught:  # one line each, like errors (click.echo does not wrap)
        click.echo(f"runner: warning: {warning.message}", err=True)
    if fmt == "table":
        print_report(experiment, console())
    else:
        render = {"markdown": markdown_report, "csv": csv_report, "json": json_report}[fmt]
        click.echo(render(experiment), nl=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the files are read again here: warned once, above
        _draw(experiment, results, plot, html, timelines)
    return 0


def _draw(experiment, results, plot, html, timelines) -> None:
    """``--plot`` (the scaling plot, or a run's timeline) and ``--html``."""
    if plot:
        import sys

        sys.stdout.flush()
        if timelines:
            from cluster_runner.analysis.timeline import find_run, layout, write_png
            from cluster_runner.results import read_records

            run = find_run(read_records(results), timelines[0])
            written = write_png(layout(run), plot)
            click.echo(f"timeline: {written}", err=True)
        else:
            from cluster_runner.analysis.plots import plot_experiment

            written = plot_experiment(experiment, plot)
            click.echo(f"plot: {written}", err=True)
    if html:
        click.echo(f"html: {_html(experiment, results, html, timelines)}", err=True)


def _html(experiment, results, html, timelines):
    """``--html``: the page, with the environment, the timelines and the engine traces."""
    from cluster_runner.analysis.html import write_report_page
    from cluster_runner.analysis.sides import environment_rows
    from cluster_runner.analysis.timeline import find_run, typical_runs
    from cluster_runner.results import read_records
    from cluster_runner.results.provenance import profile_dir

    if timelines:  # each read in one pass over the files, keeping only the run asked for
        runs = [find_run(read_records(results), run_id) for run_id in timelines]
    else:
        runs = typical_runs(experiment, read_records(results))
    traces = [
        f
        for source in experiment.files
        if profile_dir(source).is_dir()
        for f in sorted(profile_dir(source).iterdir())
        if f.suffix in (".html", ".json")
    ]
    return write_report_page(
        experiment,
        html,
        environment=environment_rows(read_records(results)),
        timelines=runs,
        profiles=traces,
    )
