"""From results files to scaling figures: read, check they are one experiment, group, compute.

One report compares runs of *one experiment* (:mod:`.identity` says what that is, and refuses
to mix two with one line naming what differs). Records are grouped into *points* (backend x
size, and chunk count) and points into *series* (one per backend; per backend and size on the
``chunks`` axis). Runs with the array stages on GPUs form series of their own (``local/gpu``),
so CPU and GPU scaling share one report. Records written by ``runner submit`` (no sweep
labels) read as a strong sweep over workers.

Which runs count. Only timed runs that verified count towards times; warm-ups are left out,
and failed, unverified and skipped runs are counted and explained. A run recorded ``cold`` (the
first on a fresh backend, nothing untimed before it; in a record older than that flag, a
``submit`` run numbered 0) is left out too when it is measurably slower than the point's other
runs (:func:`.hygiene.is_cold`), and the report says so; every other run is kept, outliers
included (they are flagged, and the median is robust to them).

Records stream (issue 16: ``runner report`` over 100,000 runs took gigabytes when every record
was kept): :mod:`.folding` reads them one at a time, in parallel for a big file, and keeps per
point only its first record and the few numbers per run the statistics need; memory grows
with the points, and by a few dozen bytes a run.

Per point: the median with its exact interval and achieved level, hygiene (:mod:`.hygiene`:
spread, outliers, too few runs, runs too short, precision against the sweep's ``--precision``),
whether it had more workers than the machine has CPUs, and what moved between the driver and
the workers when the runs had driver inputs (:mod:`.transfer`). Per series (:mod:`.series`):
speedups against the reference of :mod:`.baseline`, the fitted laws, the Karp-Flatt trend.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cluster_runner.analysis import metrics
from cluster_runner.analysis.baseline import Baseline, choose_baseline
from cluster_runner.analysis.folding import Fold, PointRuns, fold_files, series_name
from cluster_runner.analysis.hygiene import Finding, check_point, counted, precision_reached
from cluster_runner.analysis.identity import cpus_of, labels_of, machine_of
from cluster_runner.analysis.series import (
    ScalingComparison,
    Series,
    TimeComparison,
    build_series,
    compare_series,
)
from cluster_runner.analysis.transfer import PointTransfer, point_transfer
from cluster_runner.analysis.variants import references, split
from cluster_runner.errors import ResultsFileError
from cluster_runner.results import RunRecord

__all__ = [
    "Experiment",
    "Fold",
    "PointStats",
    "Series",
    "aggregate",
    "aggregate_records",
    "experiment_of",
    "series_name",
]


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
    runs: int  # timed runs that verified and count: the samples
    not_counted: int  # timed runs that failed, did not verify, or were skipped
    problems: tuple[str, ...]  # why they do not count, each reason once
    time: metrics.SampleSummary | None  # wall time of a run, seconds, with its exact interval
    samples: tuple[float, ...]  # the wall times summarised by ``time``, in the order they ran
    startup_s: float | None  # bringing the backend up, apart from the runs
    warmup_s: float | None = None  # the job's warm-up hooks at start-up, apart from both
    speedup: float | None = None  # against the reference (scaled speedup in weak mode)
    speedup_low: float | None = None
    speedup_high: float | None = None
    speedup_level: float | None = None  # the coverage the speedup's interval really has
    reference: bool = False  # this point is the speedup reference itself
    efficiency: float | None = None
    karp_flatt: float | None = None
    cpu_utilisation: float | None = None  # median over runs, share of the workers' cores
    cpu_driver_only: bool = False  # workers remote: cpu_utilisation counts the driver's alone
    peak_rss_bytes: int | None = None  # largest over runs
    task_s: float | None = None  # median time inside one task body
    overhead_s: float | None = None  # median per-task overhead
    overhead_share: float | None = None  # median share of worker time outside task bodies
    other_load: float | None = None  # largest CPU load (%) of other processes before timing
    cv: float | None = None  # coefficient of variation of the samples
    outliers: tuple[int, ...] = ()  # 1-based numbers of the counted runs flagged by MAD (kept)
    cold_left_out: int = 0  # cold first runs left out of the samples
    half_width_pct: float | None = None  # the median interval's half-width, % of the median
    cpus: int | None = None  # CPUs the workers could use on this machine; None: a cluster's
    oversubscribed: bool = False  # more workers than those CPUs
    findings: tuple[Finding, ...] = ()  # warnings, each with the change that addresses it
    transfer: PointTransfer | None = None  # what moved; None: no driver inputs (issue 21)


@dataclass(frozen=True)
class Experiment:
    """What a report shows: the experiment's identity, its series, verdicts and warnings."""

    job: str
    digest: str
    description: str
    mode: str
    axis: str
    machine: str
    files: tuple[str, ...]
    series: tuple[Series, ...]
    baseline: Baseline | None = None  # the speedup reference, and why
    cpus: int | None = None  # CPUs of the driver machine the local engines ran on
    scaling: ScalingComparison | None = None  # do the two best-scaling series differ
    fastest: TimeComparison | None = None  # is the fastest at the largest shared size faster
    findings: tuple[Finding, ...] = ()  # every point's warnings, and the experiment's


def aggregate(
    paths: Iterable[str | Path], baseline: str | None = None, workers: int | None = None
) -> Experiment:
    """Read the records of ``paths`` (files or folders) as a stream and compute every point and
    series. ``baseline`` is ``--baseline`` (see :mod:`.baseline`); None applies its default
    rule. ``workers``: processes that read a big file (default: this machine's CPUs)."""
    return experiment_of(fold_files(paths, workers), baseline)


def aggregate_records(
    tagged: Iterable[tuple[str, RunRecord | Mapping[str, Any]]], baseline: str | None = None
) -> Experiment:
    """The same from ``(source, record)`` pairs (any iterable: a generator streams); refuses to
    mix experiments. A record may also be given as its JSON object (read with
    :meth:`RunRecord.from_json`)."""
    folded = Fold()
    for source, record in tagged:
        folded.add(source, record if isinstance(record, RunRecord) else RunRecord.from_json(record))
    return experiment_of(folded, baseline)


def experiment_of(folded: Fold, baseline: str | None = None) -> Experiment:
    """Every point and series of the records ``folded`` (see :func:`aggregate`)."""
    if folded.check.first is None:
        raise ResultsFileError("the results files hold no runs")
    first = folded.check.first[1]
    labels = labels_of(first)
    points = [_point(runs, labels.axis) for runs in folded.points.values()]
    speedups = labels.axis in ("workers", "nodes")  # else: task counts, or problem sizes

    def choose(timed: dict) -> Baseline:
        return choose_baseline(
            baseline, folded.sweep_baselines, timed if speedups else {}, labels.axis
        )

    # Each --vary variant against a reference of its own variant (see .variants).
    per_variant, reference = references(points, choose)
    series_keys: dict[tuple, list[PointStats]] = {}
    for p in points:
        key = (p.backend, None if speedups else p.workers)
        series_keys.setdefault(key, []).append(p)
    series = tuple(
        build_series(
            backend, workers, sorted(ps, key=lambda p: p.size), labels.mode, labels.axis,
            per_variant[split(backend)[1]],
        )
        for (backend, workers), ps in series_keys.items()
    )  # fmt: skip
    scaling, fastest = compare_series(series)
    findings = tuple(f for s in series for p in s.points for f in p.findings)
    return Experiment(
        job=first.job.name,
        digest=labels.base_digest,
        description=first.job.description,
        mode=labels.mode,
        axis=labels.axis,
        machine=machine_of(first),
        files=tuple(folded.files),
        series=series,
        baseline=reference,
        cpus=cpus_of(first),
        scaling=scaling,
        fastest=fastest,
        findings=findings + _oversubscription(series, labels.axis),
    )


def _point(runs: PointRuns, axis: str) -> PointStats:
    """A point's figures from its folded runs (the same numbers the records gave)."""
    first = runs.first
    labels = labels_of(first)
    backend = first.backend
    cpus = cpus_of(first)
    base = PointStats(
        backend=series_name(first),
        size=labels.size,
        workers=backend.workers,
        nodes=labels.nodes,
        chunks=labels.chunks,
        factor=labels.factor,
        tasks=sum(s.tasks for s in first.stages),
        runs=0,
        not_counted=runs.total - len(runs.walls),
        problems=tuple(runs.problems),
        time=None,
        samples=(),
        startup_s=statistics.median(runs.startups) if runs.startups else None,
        warmup_s=statistics.median(runs.warmups) if runs.warmups else None,
        other_load=runs.load,
        cpus=cpus,
        oversubscribed=cpus is not None and backend.workers > cpus,
    )
    if not runs.walls:
        return base
    keep = counted(runs.walls, [bool(c) for c in runs.cold])
    kept = set(keep)
    walls = [runs.walls[i] for i in keep]
    cold = [t for i, t in enumerate(runs.walls) if i not in kept]
    workers = backend.workers

    def med(name: str) -> float | None:  # one figure of the counted runs at a time: O(runs)
        values = [v for i in keep if (v := _run_figure(name, runs, i, workers)) is not None]
        return statistics.median(values) if values else None

    peaks = [runs.peaks[i] for i in keep if runs.peaks[i] >= 0]
    summary = metrics.summarize(walls)
    where = _where(base, axis)
    hygiene = check_point(walls, label=where)
    findings = list(hygiene.findings)
    if cold:
        findings.insert(0, _cold_finding(where, cold, walls))
    if labels.precision:
        check = precision_reached(walls, labels.precision)
        if not check.reached:
            findings.append(Finding("precision", where, f"{where}: {check.words}", "--max-repeats"))
    half = max(summary.median - summary.ci_low, summary.ci_high - summary.median)
    return replace(
        base,
        runs=len(walls),
        tasks=runs.tasks[keep[0]],
        time=summary,
        samples=tuple(walls),
        cpu_utilisation=med("cpu"),
        cpu_driver_only=any(runs.driver_only[i] for i in keep),
        peak_rss_bytes=max(peaks) if peaks else None,
        task_s=med("task"),
        overhead_s=med("overhead"),
        overhead_share=med("share"),
        cv=hygiene.cv,
        outliers=tuple(i + 1 for i in hygiene.outliers),
        cold_left_out=len(cold),
        half_width_pct=100 * half / summary.median if len(walls) > 1 else None,
        findings=tuple(findings),
        transfer=point_transfer(runs.transfer, keep, runs.walls),
    )


def _cold_finding(where: str, cold: list[float], walls: list[float]) -> Finding:
    times = ", ".join(f"{t:.3g} s" for t in cold)
    return Finding(
        "cold",
        where,
        f"{where}: the first run on a fresh backend ({times}) was cold, over"
        f" {max(cold) / statistics.median(walls):.2g}x the others' median: left out of every"
        " figure; add --warmup 1",
        "--warmup 1",
    )


def _where(p: PointStats, axis: str) -> str:
    if axis == "chunks":
        return f"{p.backend} x{p.workers} c{p.chunks}"
    if axis not in ("workers", "nodes"):  # throughput: the --vary parameter is the axis
        from cluster_runner.analysis.throughput import where

        return where(p, axis)
    return f"{p.backend} at {p.size} {'node' if axis == 'nodes' else 'worker'}" + "s" * (
        p.size != 1
    )


def _oversubscription(series: tuple[Series, ...], axis: str) -> tuple[Finding, ...]:
    over = sorted({p.workers for s in series for p in s.points if p.oversubscribed})
    if not over:
        return ()
    cpus = next(p.cpus for s in series for p in s.points if p.oversubscribed)
    sizes = _and_list([str(n) for n in over])
    return (
        Finding(
            "oversubscribed",
            "",
            f"{sizes} workers exceed this machine's {cpus} CPUs (marked * in the table and"
            " shaded in the plot): the workers share cores there, so those points measure"
            " oversubscription, not more parallelism",
            f"--workers up to {cpus}",
        ),
    )


def _and_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _run_figure(name: str, runs: PointRuns, i: int, workers: int) -> float | None:
    """Run ``i``'s CPU share (``cpu``), time in a task (``task``), overhead a task
    (``overhead``) or its share (``share``): see :mod:`.metrics`."""
    wall, busy, tasks = runs.walls[i], runs.busy[i], runs.tasks[i]
    if name == "cpu":
        cpu_s = runs.cpu_s[i]
        return None if math.isnan(cpu_s) else metrics.cpu_utilisation(cpu_s, wall, workers)
    if name == "task":
        return busy / tasks
    if name == "overhead":
        return metrics.task_overhead(wall, busy, tasks, workers)
    return metrics.overhead_share(wall, busy, workers)
