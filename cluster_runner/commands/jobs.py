"""``runner jobs``: the job specs ``--job NAME`` finds, each with its stages and description."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from cluster_runner.paths import search_order_help


@dataclass
class Found:
    """One job name as ``--job NAME`` resolves it: the file that wins and the ones it hides."""

    name: str
    path: Path
    source: str  # "./jobs", "$RUNNER_JOBS_DIR" or "built-in"
    hidden: list[str] = field(default_factory=list)  # sources of files of the same name


def find_jobs() -> list[Found]:
    """Every job name in the searched folders, the first folder's file winning, by name."""
    from cluster_runner.paths import search_dirs

    found: dict[str, Found] = {}
    for entry in search_dirs("jobs"):
        if not entry.path.is_dir():
            continue
        for path in sorted(entry.path.glob("*.toml")):
            if path.stem in found:
                found[path.stem].hidden.append(entry.source)
            else:
                found[path.stem] = Found(path.stem, path, entry.source)
    return [found[name] for name in sorted(found)]


@click.command(
    help="List the job specs that --job NAME finds, with their stages and a one-line"
    f" description. Names are looked up in {search_order_help('jobs')}; a file of the same"
    " name in an earlier folder overrides a later one ('runner init' copies the built-in ones"
    " into ./jobs to edit).\n\n\b\nExamples:\n  runner jobs\n  runner jobs --json"
)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON, for scripts.")
def jobs(as_json: bool) -> int:
    from rich.markup import escape
    from rich.table import Table

    from cluster_runner.console import console, print_json
    from cluster_runner.errors import RunnerError, UsageError
    from cluster_runner.jobspec import load_job
    from cluster_runner.paths import describe

    entries = find_jobs()
    if not entries:
        raise UsageError(f"no job specs found: looked in {describe('jobs')}")
    table = Table(title="jobs", title_justify="left")
    for column in ("name", "stages", "description", "from", "file"):
        table.add_column(column)
    listing: list[dict[str, Any]] = []
    for entry in entries:
        source = entry.source
        if entry.hidden:
            source += f" (overrides {', '.join(entry.hidden)})"
        item: dict[str, Any] = {"name": entry.name, "file": str(entry.path), "from": entry.source}
        item["overrides"] = entry.hidden
        try:
            job = load_job(entry.path)
        except RunnerError as exc:
            item["error"] = str(exc)
            listing.append(item)
            table.add_row(
                entry.name, "-", f"[red]invalid:[/] {escape(str(exc))}", source, str(entry.path)
            )
            continue
        item.update(job.to_dict(), name=entry.name)
        listing.append(item)
        stages = "\n".join(f"{s.name}: {_params(s.params)}" for s in job.stages)
        table.add_row(entry.name, stages, escape(job.description), source, str(entry.path))
    if as_json:
        print_json(listing)
    else:
        console().print(table)
    return 0


def _params(params: dict) -> str:
    return " ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in params.items())
