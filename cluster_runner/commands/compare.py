"""``runner compare A B``: is B faster or slower than A, per backend and size?"""

from __future__ import annotations

import click

from cluster_runner.commands.options import Finite, SafePath


def select_options(func):
    """``--select KEY=VALUE`` (repeatable): keep only the runs tagged so (``--tag``)."""
    return click.option(
        "--select",
        "selects",
        multiple=True,
        metavar="KEY=VALUE",
        help="Keep only runs tagged KEY=VALUE (by --tag on submit or scale); repeatable.",
    )(func)


@click.command()
@click.argument("a", type=SafePath(exists=False), metavar="A")
@click.argument("b", type=SafePath(exists=False), metavar="B")
@click.option(
    "--tolerance",
    type=Finite(0.0, 1000.0, unit="percent"),
    default=5.0,
    show_default=True,
    metavar="PERCENT",
    help="A slowdown up to this many percent is tolerated: exit 1 only for a point that is"
    " slower by the verdict and by more than this.",
)
@select_options
@click.option(
    "--select-a",
    "selects_a",
    multiple=True,
    metavar="KEY=VALUE",
    help="Like --select, for A only (A and B may then be the same folder).",
)
@click.option(
    "--select-b", "selects_b", multiple=True, metavar="KEY=VALUE", help="Like --select, for B only."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "markdown", "json"]),
    default="table",
    show_default=True,
    help="table: for a terminal; markdown: for an issue; json: every figure, for tools.",
)
@click.option(
    "--html",
    type=SafePath(dir_okay=False),
    default=None,
    metavar="FILE.html",
    help="Also write the comparison as one self-contained HTML page.",
)  # fmt: skip
def compare(a, b, tolerance, selects, selects_a, selects_b, fmt, html) -> int:
    """Compare two result sets (files or folders): B against A, per backend and size.

    For each point both timed: the ratio of medians B/A with its exact interval, and a
    verdict (faster, slower, cannot tell apart) at a 5% false-difference rate. What differs
    between A and B (job parameters, versions, machine, commit, tags) is said first. Exit 0
    when nothing is slower beyond --tolerance, 1 when something is, 2 for bad input.

    \b
    Examples:
      runner compare results/before.jsonl results/after.jsonl
      runner compare results/ results/ --select-a variant=old --select-b variant=new
      runner compare old/ new/ --tolerance 10 --format markdown
    """
    from cluster_runner.analysis.compare import (
        compare_sides,
        json_comparison,
        markdown_comparison,
        print_comparison,
    )
    from cluster_runner.analysis.sides import quietly_load
    from cluster_runner.console import console
    from cluster_runner.results.provenance import parse_tags

    both = parse_tags(selects, "--select")
    want_a = {**both, **parse_tags(selects_a, "--select-a")}
    want_b = {**both, **parse_tags(selects_b, "--select-b")}
    side_a, notes_a = quietly_load("A", [a], want_a)
    side_b, notes_b = quietly_load("B", [b], want_b)
    for note in (*notes_a, *notes_b):
        click.echo(f"runner: warning: {note}", err=True)
    report = compare_sides(side_a, side_b, tolerance / 100)
    if fmt == "table":
        print_comparison(report, console())
    else:
        render = markdown_comparison if fmt == "markdown" else json_comparison
        click.echo(render(report), nl=False)
    if html:
        from cluster_runner.analysis.html import write_comparison_page

        click.echo(f"html: {write_comparison_page(report, html)}", err=True)
    return report.exit_code
