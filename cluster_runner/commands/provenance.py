"""``--tag`` and ``--profile``: what ``submit`` and ``scale`` add to their records and files.

See :mod:`cluster_runner.results.provenance` for why records carry the job's git commit and
the user's tags, and where ``--profile`` keeps the engines' traces.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from cluster_runner.backends.base import Backend, EngineTrace
    from cluster_runner.results.provenance import Provenance

F = Callable[..., Any]


def provenance_options(func: F) -> F:
    """``--tag KEY=VALUE`` (repeatable) and ``--profile``."""
    func = click.option(
        "--profile",
        is_flag=True,
        help="Also keep each engine's own trace per backend and size, in a folder next to the"
        " results file: Dask's performance report (HTML), Ray's timeline (Chrome trace JSON).",
    )(func)
    return click.option(
        "--tag",
        "tags",
        multiple=True,
        metavar="KEY=VALUE",
        help="Label every record, e.g. --tag variant=new (repeatable); 'runner compare' and"
        " 'runner check' select on it with --select.",
    )(func)


def provenance_of(job_path: str, tags: tuple[str, ...]) -> Provenance:
    """The tags checked, and the git commit of the folder the job file is in."""
    from cluster_runner.paths import resolve_job
    from cluster_runner.results.provenance import Provenance, git_source, parse_tags

    labels = parse_tags(tags)
    return Provenance(git_source(Path(resolve_job(job_path)).parent), labels)


@contextlib.contextmanager
def profiled(
    backend: Backend, stem: Path | None, say: Callable[[str], None]
) -> Iterator[EngineTrace | None]:
    """``backend.profile(stem)`` around the block when ``stem`` is given; says where the
    trace went (or why there is none) once the block has ended."""
    if stem is None:
        yield None
        return
    with backend.profile(stem) as trace:
        yield trace
    if trace.path is not None:
        say(f"profile: {trace.path}")
    elif trace.error:
        say(f"profile: none for {backend.name}: {trace.error}")
