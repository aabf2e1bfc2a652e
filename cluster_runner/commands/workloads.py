"""``runner workloads``: every workload a job can name, its parameters, and where it comes from."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click


@click.command()
@click.argument("names", nargs=-1, metavar="[WORKLOAD | JOB.toml]...")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON, for scripts.")
def workloads(names: tuple[str, ...], as_json: bool) -> int:
    """List the workloads a job can name, with their parameters and where each comes from.

    Without arguments: the built-in ones, those installed packages register (entry-point
    group cluster_runner.workloads), and those the job specs of 'runner jobs' name. With
    arguments: the workloads given (a name, package.module:NAME or path/to/file.py:NAME), or
    those a job file names.

    \b
    Examples:
      runner workloads
      runner workloads examples/montecarlo_pi.py:count_hits --json
      runner workloads examples/wordcount.toml
    """
    from rich.markup import escape
    from rich.table import Table

    from cluster_runner.console import console, print_json

    entries = _given(names) if names else _everything()
    if as_json:
        print_json(entries)
        return 0
    table = Table(title="workloads", title_justify="left")
    for column in ("workload", "parameters", "verified by", "from", "description"):
        table.add_column(column)
    for entry in entries:
        origin = f"{entry['from']}: {entry['origin']}"
        if entry.get("named_by"):
            origin += f"\n(named by {', '.join(entry['named_by'])})"
        if "error" in entry:
            table.add_row(
                escape(entry["ref"]),
                "-",
                "-",
                escape(origin),
                f"[red]invalid:[/] {escape(entry['error'])}",
            )
            continue
        params = "\n".join(_param_text(p, entry["weak"]) for p in entry["params"])
        table.add_row(
            escape(
                entry["name"]
                if entry["name"] == entry["ref"]
                else f"{entry['name']}\n{entry['ref']}"
            ),
            escape(params),
            escape(entry["verified_by"]),
            escape(origin),
            escape(entry["description"]),
        )
    console().print(table)
    return 0


def _everything() -> list[dict[str, Any]]:
    """Built-in workloads, entry points, then the user workloads that listed jobs name."""
    from cluster_runner import workloads as builtin
    from cluster_runner.errors import RunnerError
    from cluster_runner.workloads.naming import entry_points, find_workload

    entries: dict[str, dict[str, Any]] = {}
    for name in [*builtin.REGISTRY, *sorted(set(entry_points()) - set(builtin.REGISTRY))]:
        try:
            entries[name] = describe(find_workload(name))
        except RunnerError as exc:
            entries[name] = {"ref": name, "from": "entry point", "origin": "?", "error": str(exc)}
    for job, ref, base in _named_by_jobs():
        try:
            found = find_workload(ref, base)
        except RunnerError as exc:
            key = f"{ref} ({job})"
            entries.setdefault(key, {"ref": ref, "from": "job", "origin": job, "error": str(exc)})
            continue
        entry = entries.setdefault(found.ref, describe(found))
        if found.kind not in ("built-in", "entry point"):
            entry.setdefault("named_by", []).append(job)
    return list(entries.values())


def _given(names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The workloads named on the command line, or by the job files given there."""
    from cluster_runner.errors import JobSpecError
    from cluster_runner.workloads.naming import find_workload

    entries: dict[str, dict[str, Any]] = {}
    for name in names:
        if name.endswith(".toml"):
            path = Path(name)
            if not path.is_file():
                raise JobSpecError(f"job file {name} does not exist")
            refs = [(ref, base) for _, ref, base in _workloads_of(path)]
        else:
            refs = [(name, Path.cwd())]
        for ref, base in refs:
            found = find_workload(ref, base)
            entries.setdefault(found.ref, describe(found))
    return list(entries.values())


def _named_by_jobs() -> list[tuple[str, str, Path]]:
    """``(job file, workload as written, the job's folder)`` for every stage of every job
    ``runner jobs`` lists (a file that does not parse is left to ``runner jobs`` to report)."""
    from cluster_runner.commands.options import jobs_dirs

    found = []
    for folder in jobs_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                found.extend(_workloads_of(path))
    return found


def _workloads_of(path: Path) -> list[tuple[str, str, Path]]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    stages = data.get("stage") if isinstance(data.get("stage"), list) else []
    return [
        (str(path), stage["workload"], path.parent)
        for stage in stages
        if isinstance(stage, dict) and isinstance(stage.get("workload"), str)
    ]


def describe(found: Any) -> dict[str, Any]:
    """A workload as the listing shows it (and ``--json`` prints it)."""
    workload = found.workload
    tolerance = f", within rtol {workload.rtol:g}, atol {workload.atol:g}"
    exact = workload.rtol == 0 and workload.atol == 0
    return {
        "name": found.name,
        "ref": found.ref,
        "from": found.kind,
        "origin": found.origin,
        "description": workload.description or "",
        "params": [_param(p) for p in workload.params],
        "weak": workload.weak_param or None,
        "verified_by": (
            "its own verify"
            if workload.has_oracle
            else "a serial reference run" + ("" if exact else tolerance)
        ),
        "code": [source.describe() for source in found.code],
    }


def _param(p: Any) -> dict[str, Any]:
    return {
        "name": p.name,
        "type": p.kind.__name__,
        "default": p.default,
        "required": p.default is None,
        "minimum": p.minimum,
        "maximum": p.maximum,
        "choices": list(p.choices) if p.choices else None,
        "help": p.help,
    }


def _param_text(p: dict[str, Any], weak: str | None) -> str:
    value = "required" if p["required"] else f"= {p['default']!r}"
    kind = "|".join(p["choices"]) if p["choices"] else p["type"]
    bounds = [f">= {p['minimum']:g}" if p["minimum"] is not None else ""]
    bounds.append(f"<= {p['maximum']:g}" if p["maximum"] is not None else "")
    limits = ", ".join(b for b in bounds if b)
    size = " (weak)" if p["name"] == weak else ""
    return f"{p['name']}: {kind} {value}{f' ({limits})' if limits else ''}{size}"
