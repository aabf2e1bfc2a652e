"""``runner backends``: which backends and GPU support this installation can use."""

from __future__ import annotations

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON, for scripts.")
def backends(as_json: bool) -> int:
    """Show each backend, whether it is installed, its version, and the GPU support seen.

    \b
    Examples:
      runner backends
      runner backends --json
    """
    from dataclasses import asdict

    from rich.markup import escape
    from rich.table import Table

    from cluster_runner.backends.installed import engine_status, gpu_status
    from cluster_runner.console import console, print_json

    if as_json:
        print_json([asdict(status) for status in (*engine_status(), gpu_status())])
        return 0

    table = Table(title="backends", title_justify="left")
    for column in ("backend", "installed", "version", "notes"):
        table.add_column(column)
    for status in engine_status():
        table.add_row(
            status.name,
            "[green]yes[/]" if status.installed else "[red]no[/]",
            status.version or "-",
            escape(status.note),
        )
    gpu = gpu_status()
    table.add_row(
        "gpu stage (cupy)",
        "[green]yes[/]" if gpu.installed else "[red]no[/]",
        gpu.version or "-",
        escape(gpu.note),
    )
    console().print(table)
    return 0
