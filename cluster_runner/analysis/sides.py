"""The two sides of a comparison: their records, what they ran on, and what differs between them.

``runner compare A B`` and ``runner check`` read result sets that were *meant* to differ (in a
commit, an engine version, a machine, how driver inputs travelled: ``--transfer``), so unlike
one report they do not refuse to mix them: they say what differs, before any figure (issue 18).
What must still agree is what makes the figures comparable at all: the same job (by name; its
parameters may differ and are named) and the same kind of sweep (mode and axis). Each side on
its own must be one experiment, as for ``runner report`` (:mod:`.identity`).

:func:`environment_rows` is a side's environment in rows (``what``, ``value``), which the
comparison and the HTML report show; :func:`differences` is the rows that differ.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster_runner.analysis.aggregate import Experiment, aggregate_records
from cluster_runner.analysis.identity import (
    given_params,
    job_difference,
    labels_of,
    machine_of,
    transfer_of,
    value_text,
)
from cluster_runner.errors import ResultsFileError, UsageError
from cluster_runner.results import RunRecord, read_records, results_files
from cluster_runner.results.provenance import select

#: Packages of the driver's environment a comparison names when their versions differ.
PACKAGES = ("numpy", "numba", "dask", "distributed", "ray", "cupy")


@dataclass(frozen=True)
class Side:
    """One result set: its name (``A``), files, the records selected, and their experiment."""

    label: str
    files: tuple[str, ...]
    records: tuple[RunRecord, ...]
    experiment: Experiment

    @property
    def where(self) -> str:
        """The files in a few words: one name, or the first and a count."""
        if len(self.files) == 1:
            return self.files[0]
        return f"{self.files[0]} and {len(self.files) - 1} more"


def load_side(
    label: str, paths: Sequence[str | Path], wanted: Mapping[str, str] | None = None
) -> Side:
    """Read a side's files (or folders), keep the records tagged ``wanted``, aggregate them.

    Raises a one-line :class:`ResultsFileError` (exit 2) for files without runs, a selection
    that keeps none, or records of several experiments.
    """
    files = [str(p) for p in results_files(paths)]
    tagged = [(f, r) for f in files for r in read_records([f])]
    if not tagged:
        raise ResultsFileError(f"{label} ({', '.join(files)}): the results files hold no runs")
    if wanted:
        kept = {id(r) for r in select((r for _, r in tagged), wanted)}
        chosen = [(f, r) for f, r in tagged if id(r) in kept]
        if not chosen:
            have = sorted({f"{k}={v}" for _, r in tagged for k, v in r.tags.items()})
            asked = " ".join(f"{k}={v}" for k, v in wanted.items())
            raise ResultsFileError(
                f"{label}: no runs tagged {asked} in {', '.join(files)} (tags there:"
                f" {', '.join(have) or 'none'})"
            )
        tagged = chosen
    try:
        experiment = aggregate_records(tagged)
    except ResultsFileError as exc:
        raise ResultsFileError(f"{label}: {exc}") from None
    return Side(label, tuple(dict.fromkeys(files)), tuple(r for _, r in tagged), experiment)


def check_comparable(a: Side, b: Side) -> None:
    """Refuse, in one line, two sides whose figures cannot be compared: different jobs, or
    different kinds of sweep. Different parameters of one job are allowed (and named)."""
    ra, rb = a.records[0], b.records[0]
    if ra.job.name != rb.job.name:
        raise UsageError(
            f"{a.label} ({a.where}) ran job {ra.job.name}, {b.label} ({b.where}) ran job"
            f" {rb.job.name}: compare runs of one job"
        )
    for what in ("mode", "axis"):
        va, vb = getattr(labels_of(ra), what), getattr(labels_of(rb), what)
        if va != vb:
            raise UsageError(
                f"{a.label} is a sweep with {what} {va}, {b.label} with {what} {vb}: their"
                " times do not compare"
            )


class EnvironmentRows:
    """What a set of records ran, gathered one record at a time (records may be streamed):
    :meth:`rows` gives ``(what, value)`` rows, several values of one row joined by ``, ``."""

    def __init__(self) -> None:
        self._values: dict[str, dict[str, None]] = {}
        self._timed = 0
        self._sessions: set[str] = set()
        self._times: list[str] = []

    def add(self, r: RunRecord) -> None:
        labels = labels_of(r)
        found = [
            ("job", f"{r.job.name} (spec {labels.base_digest[:10]})"),
            ("parameters", _params_text(r)),
            ("sweep", f"{labels.mode} over {labels.axis}"),
            ("machine", machine_of(r)),
            ("platform", r.environment.platform),
            *((p, v) for p, v in sorted(r.environment.packages.items()) if p in PACKAGES),
            (f"backend {r.backend.name}",
             f"{r.backend.version or '?'} on {r.backend.address or 'its own engine'}"),
            ("git commit", r.source.short if r.source else None),
            ("tags", " ".join(f"{k}={v}" for k, v in sorted(r.tags.items()))),
            ("injected fault", r.fault or "none"),
        ]  # fmt: skip
        mode = transfer_of(r)
        if mode is not None:  # issue 21: a side that shared its driver inputs, one that copied
            found.append(("transfer", mode))
        for what, value in found:
            seen = self._values.setdefault(what, {})
            if value not in (None, ""):
                seen[str(value)] = None
        self._timed += not r.warmup
        self._sessions.add(r.session)
        if r.time:
            self._times = sorted({*self._times[:1], *self._times[-1:], r.time})

    def rows(self) -> list[tuple[str, str]]:
        rows = [(what, ", ".join(values) or "-") for what, values in self._values.items()]
        if self._times:
            first, last = self._times[0], self._times[-1]
            rows.append(("when", first if first == last else f"{first} to {last}"))
        n = len(self._sessions)
        rows.append(("runs", f"{self._timed} timed in {n} session{'s' * (n != 1)}"))
        return rows


def environment_rows(records: Iterable[RunRecord]) -> list[tuple[str, str]]:
    """What a set of records ran: ``(what, value)`` rows (see :class:`EnvironmentRows`)."""
    gathered = EnvironmentRows()
    for record in records:
        gathered.add(record)
    return gathered.rows()


def differences(a: Side, b: Side) -> tuple[list[tuple[str, str, str]], list[str]]:
    """``([(what, in A, in B), ...], [what is the same, ...])`` of two comparable sides.

    Parameters are named as :func:`.identity.job_difference` words them; the time and the
    number of runs always differ and are left out.
    """
    ea, eb = dict(environment_rows(a.records)), dict(environment_rows(b.records))
    differ, same = [], []
    for what in dict.fromkeys([*ea, *eb]):
        if what in ("when", "runs"):
            continue
        va, vb = ea.get(what, "-"), eb.get(what, "-")
        if what == "parameters" and va != vb:
            mine, theirs = job_difference(a.records[0], b.records[0])
            differ.append((what, mine.split(" with ", 1)[-1], theirs))
        elif va != vb:
            differ.append((what, va, vb))
        else:
            same.append(what)
    return differ, same


def _params_text(record: RunRecord) -> str:
    """The job's parameters as given, before the sweep scaled or overrode them."""
    params = given_params(record)
    one_stage = len({k.split(".", 1)[0] for k in params}) == 1
    return ", ".join(
        f"{k.split('.', 1)[1] if one_stage else k}={value_text(v)}" for k, v in params.items()
    )


def quietly_load(label: str, paths: Sequence[str | Path], wanted: Mapping[str, str] | None):
    """:func:`load_side`, and the warnings reading raised (a truncated last line), as text."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        side = load_side(label, paths, wanted)
    return side, [str(w.message) for w in caught]
