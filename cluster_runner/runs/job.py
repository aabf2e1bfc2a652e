"""Running a job on a backend: repeats, per-stage timing, verification, one record per run.

A run executes the job's stages one after another, each as its own graph, so that each stage's
wall time is its own (stages that overlapped would share their time). A stage's wall time runs
from the first submit to the sink's value in the driver: it includes every scheduling and
transfer cost a user of that backend would pay. Verification happens after the clock stops.

While a stage's graph runs, a :class:`~cluster_runner.runs.monitor.TreeMonitor` measures the CPU
time and peak memory of the driver's process tree (which holds the workers of every backend it
starts): each stage gets its ``usage``, and the record the sum of CPU seconds and the largest
peak. The monitor's snapshots fall outside the stage clock; verification, which runs in the
driver after the clock stops, is not in the figures.

Each run becomes a record (see :mod:`cluster_runner.results`) handed to ``on_record`` the
moment it ends, so the caller can write it before the next run starts.

With ``fault`` (``--inject-fault``, see :mod:`cluster_runner.runs.faults`) every run's first stage
loses a worker partway through; the record names the fault, and each stage says how many of its
tasks were rerun (``retried``). A run whose losses exceed the retry budget is recorded as failed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import asdict, replace

from cluster_runner.backends.base import Backend
from cluster_runner.errors import ExecutionError, traceback_of
from cluster_runner.execution.tasks import TaskTrace
from cluster_runner.execution.walk import DEFAULT_RETRIES, execute
from cluster_runner.jobspec import JobSpec, StageSpec
from cluster_runner.results import (
    BackendRecord,
    JobRecord,
    Placement,
    RunRecord,
    StageRecord,
    StageResult,
    SweepLabels,
    Usage,
    driver_environment,
    new_id,
    now,
)
from cluster_runner.runs.faults import check_supported, inject
from cluster_runner.runs.monitor import TreeMonitor
from cluster_runner.workloads import get_workload


def run_job(
    job: JobSpec,
    backend: Backend,
    *,
    repeat: int = 1,
    warmup: int = 0,
    timeout: float | None = None,
    retries: int = DEFAULT_RETRIES,
    on_record: Callable[[RunRecord], None] = lambda record: None,
    session: str | None = None,
    labels: SweepLabels | None = None,
    first_index: int = 0,
    exclude_pids: Collection[int] = (),
    fault: str | None = None,
) -> list[RunRecord]:
    """Run ``job`` ``warmup + repeat`` times on a started backend; return the records.

    A run that fails is recorded (status ``failed``, with the failed task's traceback when
    its error carries one) before its error is raised again. ``labels`` go into every record
    (a sweep's mode and point, for instance). ``first_index`` numbers the first run's
    ``repeat`` field, for a caller (a sweep) that makes a point's runs one call at a time.
    ``exclude_pids`` are processes (with their descendants) left out of the usage figures: the
    other backends a sweep keeps up meanwhile. ``fault`` is injected into the first stage of
    every run.
    """
    check_supported(fault, backend.name, backend.worker_processes)
    graph = job.build_graph()
    stage_graphs = [(stage, graph.stage(stage.name)) for stage in job.stages]
    session = session or new_id()
    records = []
    for i in range(warmup + repeat):
        record = _base_record(job, backend, session, first_index + i, i < warmup, labels)
        record = replace(record, fault=fault)
        stages: list[StageRecord] = []
        began = time.perf_counter()
        try:
            for number, (stage, stage_graph) in enumerate(stage_graphs):
                with inject(fault if number == 0 else None, stage_graph) as run_graph:
                    stages.append(
                        _run_stage(stage, run_graph, backend, timeout, retries, exclude_pids)
                    )
        except ExecutionError as exc:
            on_record(
                replace(
                    record,
                    status="failed",
                    error=str(exc),
                    error_traceback=traceback_of(exc),
                    wall_s=time.perf_counter() - began,
                    stages=tuple(stages),
                    retried=sum(s.retried for s in stages),
                )
            )
            raise
        ok = all(s.result.verified for s in stages)
        record = replace(
            record,
            status="verified" if ok else "unverified",
            wall_s=sum(s.wall_s for s in stages),
            stages=tuple(stages),
            retried=sum(s.retried for s in stages),
            usage=_usage(stages, backend),
        )
        on_record(record)
        records.append(record)
    return records


def _usage(stages: list[StageRecord], backend: Backend) -> Usage:
    """A run's CPU seconds and peak memory over its stages, and what the figures cover."""
    remote = backend.options.address is not None
    usages = [s.usage for s in stages if s.usage is not None]
    return Usage(
        cpu_s=sum(u.cpu_s for u in usages),
        peak_rss_bytes=max((u.peak_rss_bytes for u in usages), default=0),
        processes=max((u.processes for u in usages), default=0),
        scope="driver only (workers are remote)" if remote else "driver process tree",
    )


def _run_stage(
    stage: StageSpec,
    stage_graph,
    backend: Backend,
    timeout,
    retries,
    exclude_pids: Collection[int] = (),
) -> StageRecord:
    workload = get_workload(stage.workload)
    with TreeMonitor(exclude=exclude_pids) as monitor:  # its snapshots stay outside the clock
        began = time.perf_counter()
        result = execute(stage_graph, backend, timeout=timeout, retries=retries)
        wall = time.perf_counter() - began
    (value,) = result.values.values()
    verification = workload.verify(stage.params, value)
    summary = workload.summarize(stage.params, value)
    return StageRecord(
        name=stage.name,
        workload=stage.workload,
        tasks=len(stage_graph),
        wall_s=wall,
        result=StageResult(
            result=summary.value,
            display=summary.display,
            digest=summary.digest,
            verified=verification.ok,
            verification=verification.method,
            expected=verification.expected,
        ),
        placement=placement(result.traces),
        retried=result.retried,
        usage=Usage.from_json(monitor.result()),
    )


def placement(traces: list[TaskTrace]) -> Placement:
    """Where a stage's tasks ran, how busy they kept the workers, and any device phases."""
    busy = [t.end - t.start for t in traces]
    phases: Counter[str] = Counter()
    for trace in traces:
        phases.update(trace.phases or {})
    devices = Counter(t.device for t in traces if t.device)
    return Placement(
        workers_used=dict(Counter(t.worker for t in traces)),
        nodes_used=dict(Counter(t.node for t in traces)),
        busy_s=sum(busy),
        task_max_s=max(busy, default=0.0),
        span_s=(max(t.end for t in traces) - min(t.start for t in traces)) if traces else 0.0,
        phases=dict(phases) if devices else None,
        devices_used=dict(devices) if devices else None,
    )


def _base_record(
    job: JobSpec,
    backend: Backend,
    session: str,
    index: int,
    warmup: bool,
    labels: SweepLabels | None,
) -> RunRecord:
    return RunRecord(
        run_id=new_id(),
        session=session,
        time=now(),
        job=JobRecord.from_json({**job.to_dict(), "digest": job.digest}),
        backend=BackendRecord.from_json(asdict(backend.info())),
        repeat=index,
        warmup=warmup,
        status="running",
        environment=driver_environment(),
        labels=labels,
    )


def skipped_record(
    job: JobSpec,
    backend: Backend,
    problems: list[str],
    *,
    session: str,
    labels: SweepLabels | None = None,
) -> RunRecord:
    """The record of a sweep point that was not timed, because its pre-flight found problems.

    Writing it keeps the results file honest about what a sweep left out, and why.
    """
    record = _base_record(job, backend, session, 0, False, labels)
    return replace(record, status="skipped", error="; ".join(problems))
