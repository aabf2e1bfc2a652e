"""``runner jobs``: the job specs in jobs/, each with its stages and description."""

from __future__ import annotations

import click

from cluster_runner.commands.options import jobs_dirs


@click.command()
def jobs() -> int:
    """List the job specs that --job NAME finds, with a one-line description.

    \b
    Example:
      runner jobs
    """
    from rich.markup import escape
    from rich.table import Table

    from cluster_runner.console import console
    from cluster_runner.errors import RunnerError
    from cluster_runner.jobspec import load_job

    table = Table(title="jobs", title_justify="left")
    for column in ("name", "file", "stages", "description"):
        table.add_column(column)
    seen = set()
    for folder in jobs_dirs():
        for path in sorted(folder.glob("*.toml")):
            if path.stem in seen:
                continue
            seen.add(path.stem)
            try:
                job = load_job(path)
            except RunnerError as exc:
                table.add_row(path.stem, str(path), "-", f"[red]invalid:[/] {escape(str(exc))}")
                continue
            stages = "\n".join(f"{s.name}: {_params(s.params)}" for s in job.stages)
            table.add_row(job.name, str(path), stages, escape(job.description))
    if not seen:
        raise click.UsageError(f"no job specs found in {', '.join(map(str, jobs_dirs()))}")
    console().print(table)
    return 0


def _params(params: dict) -> str:
    return " ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in params.items())
