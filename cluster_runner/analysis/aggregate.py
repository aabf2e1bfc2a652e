"""From results files to scaling figures: read, check they are one experiment, group, compute.

One report compares runs of *one experiment*: the same job (by the digest of its spec before
any weak scaling or chunk override), the same mode and axis, the same driver machine, and for
each backend the same cluster. Anything else would compare apples with pears, so
:func:`aggregate` refuses with one line naming the two files and what differs
(:class:`~cluster_runner.errors.MixedResultsError`) rather than mixing silently.

Records are grouped into *points* (backend x size, and chunk count) and points into *series*
(one per backend; per backend and size on the ``chunks`` axis). Runs with the array stages on
GPUs form series of their own (``local/gpu``), so CPU and GPU scaling share one report. Only
timed runs that verified count towards times; warm-ups are left out, and failed, unverified
and skipped runs are counted and explained. Records written by ``runner submit`` (no sweep
labels) read as a strong sweep over workers, so a few submits at different ``--workers`` can be
reported as well.

Every number is computed by :mod:`cluster_runner.analysis.metrics`; this module only chooses inputs.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cluster_runner.analysis import metrics
from cluster_runner.errors import MixedResultsError, ResultsFileError
from cluster_runner.results import RunRecord, SweepLabels, read_records, results_files

#: Multiples of the largest measured size at which fits predict the speedup.
PREDICT_AT = (2, 4, 10)


@dataclass(frozen=True)
class PointStats:
    """The figures of one point: a backend at one size (and chunk count)."""

    backend: str
    size: int  # the point's value on the axis
    workers: int  # workers the backend reported
    nodes: int | None
    chunks: int | None
    factor: int
    tasks: int  # tasks per run, over all stages
    runs: int  # timed runs that verified: the samples
    not_counted: int  # timed runs that failed, did not verify, or were skipped
    problems: tuple[str, ...]  # why they do not count, each reason once
    time: metrics.SampleSummary | None  # wall time of a run, seconds
    samples: tuple[float, ...]  # the wall times summarised by ``time``
    startup_s: float | None  # bringing the backend up, apart from the runs
    speedup: float | None = None  # scaled speedup in weak mode
    speedup_low: float | None = None
    speedup_high: float | None = None
    efficiency: float | None = None
    karp_flatt: float | None = None
    cpu_utilisation: float | None = None  # median over runs, share of the workers' cores
    peak_rss_bytes: int | None = None  # largest over runs
    task_s: float | None = None  # median time inside one task body
    overhead_s: float | None = None  # median per-task overhead
    overhead_share: float | None = None  # median share of worker time outside task bodies
    other_load: float | None = None  # largest CPU load (%) of other processes before timing


@dataclass(frozen=True)
class Series:
    """One line of a plot: a backend's points along the axis, and the law fitted to them."""

    backend: str
    workers: int | None  # on the chunks axis: the fixed size of the series
    points: tuple[PointStats, ...]
    base: int | None  # the size speedups are relative to
    fit: str | None = None  # "amdahl" or "gustafson"
    serial_fraction: float | None = None
    fit_error: float | None = None  # rms relative error of the Amdahl fit
    predictions: dict[int, float] = field(default_factory=dict)  # size -> predicted speedup
    fit_t1: float | None = None  # Amdahl's fitted time on one worker (for plotting)

    @property
    def timed(self) -> tuple[PointStats, ...]:
        return tuple(p for p in self.points if p.time is not None)


@dataclass(frozen=True)
class Experiment:
    """What a report shows: the experiment's identity and its series."""

    job: str
    digest: str
    description: str
    mode: str
    axis: str
    machine: str
    files: tuple[str, ...]
    series: tuple[Series, ...]


def aggregate(paths: Iterable[str | Path]) -> Experiment:
    """Read the records of ``paths`` (files or folders) and compute every point and series."""
    tagged = []
    files = list(results_files(paths))
    for path in files:
        tagged.extend((str(path), record) for record in read_records([path]))
    return aggregate_records(tagged)


def aggregate_records(tagged: Sequence[tuple[str, RunRecord | Mapping[str, Any]]]) -> Experiment:
    """The same from ``(source, record)`` pairs; refuses to mix experiments.

    A record may also be given as its JSON object (read with :meth:`RunRecord.from_json`).
    """
    if not tagged:
        raise ResultsFileError("the results files hold no runs")
    typed = [
        (source, r if isinstance(r, RunRecord) else RunRecord.from_json(r)) for source, r in tagged
    ]
    _check_one_experiment(typed)
    first = typed[0][1]
    labels = _labels(first)
    groups: dict[tuple, list[RunRecord]] = {}
    for _, record in typed:
        if record.warmup:
            continue
        groups.setdefault(_point_key(record), []).append(record)
    points = [_point(records) for records in groups.values()]
    series_keys: dict[tuple, list[PointStats]] = {}
    for p in points:
        key = (p.backend, p.workers if labels.axis == "chunks" else None)
        series_keys.setdefault(key, []).append(p)
    series = tuple(
        _series(backend, workers, sorted(ps, key=lambda p: p.size), labels.mode, labels.axis)
        for (backend, workers), ps in series_keys.items()
    )
    return Experiment(
        job=first.job.name,
        digest=labels.base_digest,
        description=first.job.description,
        mode=labels.mode,
        axis=labels.axis,
        machine=_machine(first),
        files=tuple(dict.fromkeys(source for source, _ in typed)),
        series=series,
    )


@dataclass(frozen=True)
class _PointLabels:
    """A record's place in its experiment, with the defaults of a plain ``submit`` record."""

    mode: str
    axis: str
    size: int
    nodes: int | None
    chunks: int | None
    factor: int
    device: str
    base_digest: str


def _labels(record: RunRecord) -> _PointLabels:
    """A record's sweep labels; a ``submit`` record (no labels) reads as a strong sweep over
    workers, and a label an older sweep did not write takes the same default."""
    labels = record.labels or SweepLabels()

    def given(value, default):
        return default if value is None else value

    return _PointLabels(
        mode=given(labels.mode, "strong"),
        axis=given(labels.axis, "workers"),
        size=given(labels.size, labels.workers or record.backend.workers),
        nodes=labels.nodes,
        chunks=labels.chunks,
        factor=given(labels.factor, 1),
        device=given(labels.device, "gpu" if record.job.uses_gpu else "cpu"),
        base_digest=given(labels.base_digest, record.job.digest),
    )


def series_name(record: RunRecord) -> str:
    """The line a record belongs to: its backend, and ``/gpu`` for runs on GPUs."""
    device = _labels(record).device
    return record.backend.name + ("/gpu" if device == "gpu" else "")


def _machine(record: RunRecord) -> str:
    env = record.environment

    def shown(value) -> str:
        return "?" if value is None else str(value)

    memory = env.memory_bytes or 0
    return (
        f"{shown(env.hostname)}: {shown(env.cpu_logical)} CPUs"
        f" ({shown(env.cpu_model)}), {memory / 2**30:.0f} GiB,"
        f" Python {shown(env.python)}"
    )


def _identity(record: RunRecord) -> dict[str, str]:
    """What must match for two records to belong to one report, as ``name: value``."""
    labels = _labels(record)
    return {
        "job": f"{record.job.name} (spec digest {labels.base_digest})",
        "mode": labels.mode,
        "axis": labels.axis,
        "machine": _machine(record),
        "injected fault": record.fault or "none",
    }


def _check_one_experiment(tagged: list[tuple[str, RunRecord]]) -> None:
    source0, record0 = tagged[0]
    want = _identity(record0)
    clusters: dict[str, tuple[str, str | None]] = {}
    for source, record in tagged:
        have = _identity(record)
        for name, value in want.items():
            if have[name] != value:
                raise MixedResultsError(
                    f"refusing to mix results of different experiments: {source0} has {name}"
                    f" {value}, {source} has {name} {have[name]}; report them separately"
                )
        backend = record.backend.name
        address = record.backend.address
        seen = clusters.setdefault(backend, (source, address))
        if seen[1] != address:
            raise MixedResultsError(
                f"refusing to mix results of different clusters: {backend} ran on"
                f" {seen[1] or 'its own local cluster'} in {seen[0]} and on"
                f" {address or 'its own local cluster'} in {source}; report them separately"
            )


def _point_key(record: RunRecord) -> tuple:
    labels = _labels(record)
    return (series_name(record), labels.size, labels.chunks)


def _point(records: list[RunRecord]) -> PointStats:
    first = records[0]
    labels = _labels(first)
    good = [r for r in records if r.status == "verified"]
    problems = tuple(dict.fromkeys(_problem(r) for r in records if r.status != "verified"))
    backend = first.backend
    startups = [r.backend.startup_s for r in records if r.backend.startup_s is not None]
    loads = [r.labels.other_load for r in records if r.labels is not None]
    loads = [x for x in loads if x is not None]
    base = PointStats(
        backend=series_name(first),
        size=labels.size,
        workers=backend.workers,
        nodes=labels.nodes,
        chunks=labels.chunks,
        factor=labels.factor,
        tasks=sum(s.tasks for s in first.stages),
        runs=len(good),
        not_counted=len(records) - len(good),
        problems=problems,
        time=None,
        samples=(),
        startup_s=statistics.median(startups) if startups else None,
        other_load=max(loads) if loads else None,
    )
    if not good:
        return base
    walls = [r.wall_s for r in good]
    workers = backend.workers
    per_run = [_run_figures(r, workers) for r in good]

    def med(name: str) -> float | None:
        values = [f[name] for f in per_run if f[name] is not None]
        return statistics.median(values) if values else None

    peaks = [f["peak"] for f in per_run if f["peak"] is not None]
    return replace(
        base,
        tasks=sum(s.tasks for s in good[0].stages),
        time=metrics.summarize(walls),
        samples=tuple(walls),
        cpu_utilisation=med("cpu"),
        peak_rss_bytes=max(peaks) if peaks else None,
        task_s=med("task"),
        overhead_s=med("overhead"),
        overhead_share=med("share"),
    )


def _problem(record: RunRecord) -> str:
    """Why a run does not count, in a few words: its error, or the result that was wrong."""
    if record.status != "unverified" or record.error:
        return f"{record.status}: {record.error or 'no reason given'}"
    wrong = [
        f"{s.name} gave {s.result.result!r}, expected {s.result.expected!r}"
        f" ({s.result.verification or None})"
        for s in record.stages
        if not s.result.verified
    ]
    return "unverified: " + "; ".join(wrong)


def _run_figures(record: RunRecord, workers: int) -> dict[str, float | None]:
    wall = record.wall_s
    busy = sum(s.placement.busy_s for s in record.stages)
    tasks = sum(s.tasks for s in record.stages)
    usage = record.usage
    return {
        "cpu": metrics.cpu_utilisation(usage.cpu_s, wall, workers) if usage else None,
        "peak": usage.peak_rss_bytes if usage else None,
        "task": busy / tasks,
        "overhead": metrics.task_overhead(wall, busy, tasks, workers),
        "share": metrics.overhead_share(wall, busy, workers),
    }


def _series(
    backend: str, workers: int | None, points: list[PointStats], mode: str, axis: str
) -> Series:
    timed = [p for p in points if p.time is not None]
    if axis == "chunks" or not timed:
        return Series(backend, workers, tuple(points), base=None)
    base = timed[0]
    samples = {p.size: p.samples for p in timed}
    out = []
    for p in points:
        if p.time is None:
            out.append(p)
            continue
        ratio, low, high = metrics.ratio_ci(samples[base.size], samples[p.size])
        r = p.size / base.size
        if mode == "weak":
            out.append(
                replace(
                    p,
                    speedup=r * ratio,
                    speedup_low=r * low,
                    speedup_high=r * high,
                    efficiency=metrics.weak_efficiency(base.time.median, p.time.median),
                )
            )
        else:
            s = metrics.speedup(base.time.median, p.time.median)
            out.append(
                replace(
                    p,
                    speedup=s,
                    speedup_low=low,
                    speedup_high=high,
                    efficiency=metrics.efficiency(s, p.size, base.size),
                    karp_flatt=metrics.karp_flatt(s, p.size, base.size),
                )
            )
    series = Series(backend, workers, tuple(out), base=base.size)
    timed = series.timed
    if len({p.size for p in timed}) < 2:
        return series
    largest = max(p.size for p in timed)
    if mode == "weak":
        fit = metrics.gustafson_fit([p.size for p in timed], [p.speedup for p in timed], base.size)
        predictions = {m * largest: fit.scaled_speedup(m * largest, base.size) for m in PREDICT_AT}
        return replace(
            series, fit="gustafson", serial_fraction=fit.serial_fraction, predictions=predictions
        )
    amdahl = metrics.amdahl_fit([p.size for p in timed], [p.time.median for p in timed])
    predictions = {m * largest: amdahl.speedup(m * largest, base.size) for m in PREDICT_AT}
    return replace(
        series,
        fit="amdahl",
        serial_fraction=amdahl.serial_fraction,
        fit_error=amdahl.rms_relative_error,
        predictions=predictions,
        fit_t1=amdahl.t1,
    )
