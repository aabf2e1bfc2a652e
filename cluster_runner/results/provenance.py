"""Where a record came from: the job's git commit, the user's ``--tag`` labels, engine traces.

Issue 18: a user who reruns an experiment after changing code, a library or the cluster asks
"did it get slower, and why?". To answer, the two result sets must say what they ran: every
record carries the git commit of the folder its job came from, whether that work tree had
uncommitted changes (:func:`git_source`), and the ``--tag KEY=VALUE`` labels of the command
that wrote it (:func:`parse_tags`), which ``runner compare`` and ``runner check`` select on
(:func:`select`). The command stamps each record as it writes it (:meth:`Provenance.stamp`),
so the runs, the sweep loop and the backends need not know.

``--profile`` keeps the engines' own traces next to the results file, in a folder named after
it (:func:`profile_dir`): a Dask ``performance_report`` HTML page and a Ray timeline (Chrome
trace JSON) per backend and size; the HTML report links what it finds there.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from cluster_runner.errors import UsageError
from cluster_runner.results.records import RunRecord, Source

#: A tag's key: a letter or underscore, then letters, digits and ``_.-``.
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
#: Longest tag value kept.
_VALUE_MAX = 200
#: Seconds git has to answer before the commit is recorded as unknown.
_GIT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Provenance:
    """What a command writes into each of its records: the job's source and its tags."""

    source: Source | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def stamp(self, record: RunRecord) -> RunRecord:
        """``record`` with this source and these tags."""
        return replace(record, source=self.source, tags=dict(self.tags))


def parse_tags(items: Iterable[str], option: str = "--tag") -> dict[str, str]:
    """``["variant=new", "host=a"]`` -> ``{"variant": "new", "host": "a"}``; one line if bad."""
    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise UsageError(
                f"{option} {item!r}: expected KEY=VALUE, the key a name such as variant or"
                " run.note (letters, digits, _ . -)"
            )
        if len(value) > _VALUE_MAX or any(ord(c) < 32 for c in value):
            raise UsageError(
                f"{option} {key}: the value must be one line of at most {_VALUE_MAX} characters"
            )
        if key in tags and tags[key] != value:
            raise UsageError(f"{option} {key} is given twice, as {tags[key]!r} and {value!r}")
        tags[key] = value
    return tags


def select(records: Iterable[RunRecord], wanted: Mapping[str, str]) -> list[RunRecord]:
    """The records whose tags hold every ``KEY=VALUE`` of ``wanted``."""
    return [r for r in records if all(r.tags.get(k) == v for k, v in wanted.items())]


def git_source(folder: str | Path) -> Source:
    """The git commit of ``folder``'s work tree and whether tracked files changed since.

    ``commit`` is None when git is not installed, the folder is in no work tree, or git does
    not answer within a few seconds: a record then says so rather than guess.
    """
    path = Path(folder).resolve()
    commit = _git(path, "rev-parse", "--verify", "HEAD")
    if commit is None:
        return Source(str(path))
    status = _git(path, "status", "--porcelain", "--untracked-files=no")
    return Source(str(path), commit, dirty=bool(status))


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def profile_dir(results: str | Path) -> Path:
    """The folder of a results file's engine traces: ``X.jsonl`` -> ``X.profile``."""
    path = Path(results)
    return path.with_name(path.stem + ".profile")


def profile_stem(folder: Path, backend: str, size: int, axis: str = "workers") -> Path:
    """A fresh name, without suffix, for one backend's traces at one size: ``dask-x2``
    (``dask-n2`` on a node sweep), ``dask-x2-2`` if a GPU series took the first."""
    base = f"{backend}-{'n' if axis == 'nodes' else 'x'}{size}"
    stem, number = folder / base, 1
    while any(stem.with_suffix(s).exists() for s in (".html", ".json")):
        number += 1
        stem = folder / f"{base}-{number}"
    return stem
