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
from dataclasses import asdict
from typing import Any

from cluster_runner.backends.base import Backend, TaskTrace
from cluster_runner.errors import ExecutionError
from cluster_runner.execution.walk import DEFAULT_RETRIES, execute
from cluster_runner.jobspec import JobSpec
from cluster_runner.results import RECORD_FORMAT, SCHEMA_VERSION, environment, new_id, now
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
    on_record: Callable[[dict[str, Any]], None] = lambda record: None,
    session: str | None = None,
    labels: dict[str, Any] | None = None,
    first_index: int = 0,
    exclude_pids: Collection[int] = (),
    fault: str | None = None,
) -> list[dict[str, Any]]:
    """Run ``job`` ``warmup + repeat`` times on a started backend; return the records.

    A run that fails is recorded (status ``failed``) before its error is raised again.
    ``labels`` are copied into every record (a sweep's mode and point, for instance).
    ``first_index`` numbers the first run's ``repeat`` field, for a caller (a sweep) that
    makes a point's runs one call at a time. ``exclude_pids`` are processes (with their
    descendants) left out of the usage figures: the other backends a sweep keeps up meanwhile.
    ``fault`` is injected into the first stage of every run.
    """
    check_supported(fault, backend.name, backend.worker_processes)
    graph = job.build_graph()
    stage_graphs = [(stage, graph.stage(stage.name)) for stage in job.stages]
    session = session or new_id()
    records = []
    for i in range(warmup + repeat):
        record = _base_record(job, backend, session, first_index + i, i < warmup, labels)
        record["fault"] = fault
        began = time.perf_counter()
        try:
            for number, (stage, stage_graph) in enumerate(stage_graphs):
                with inject(fault if number == 0 else None, stage_graph) as run_graph:
                    record["stages"].append(
                        _run_stage(stage, run_graph, backend, timeout, retries, exclude_pids)
                    )
        except ExecutionError as exc:
            record.update(status="failed", error=str(exc), wall_s=time.perf_counter() - began)
            record["retried"] = sum(s["retried"] for s in record["stages"])
            on_record(record)
            raise
        record["retried"] = sum(s["retried"] for s in record["stages"])
        record["usage"] = _usage(record["stages"], backend)
        record["wall_s"] = sum(s["wall_s"] for s in record["stages"])
        ok = all(s["verified"] for s in record["stages"])
        record["status"] = "verified" if ok else "unverified"
        on_record(record)
        records.append(record)
    return records


def _usage(stages: list[dict[str, Any]], backend: Backend) -> dict[str, Any]:
    """A run's CPU seconds and peak memory over its stages, and what the figures cover."""
    remote = backend.options.address is not None
    return {
        "cpu_s": sum(s["usage"]["cpu_s"] for s in stages),
        "peak_rss_bytes": max((s["usage"]["peak_rss_bytes"] for s in stages), default=0),
        "processes": max((s["usage"]["processes"] for s in stages), default=0),
        "scope": "driver only (workers are remote)" if remote else "driver process tree",
    }


def _run_stage(
    stage, stage_graph, backend: Backend, timeout, retries, exclude_pids: Collection[int] = ()
) -> dict[str, Any]:
    workload = get_workload(stage.workload)
    with TreeMonitor(exclude=exclude_pids) as monitor:  # its snapshots stay outside the clock
        began = time.perf_counter()
        result = execute(stage_graph, backend, timeout=timeout, retries=retries)
        wall = time.perf_counter() - began
    (value,) = result.values.values()
    verification = workload.verify(stage.params, value)
    summary = workload.summarize(stage.params, value)
    return {
        "name": stage.name,
        "workload": stage.workload,
        "tasks": len(stage_graph),
        "wall_s": wall,
        "result": summary.value,
        "display": summary.display,
        "digest": summary.digest,
        "verified": verification.ok,
        "verification": verification.method,
        "expected": verification.expected,
        "retried": result.retried,
        "usage": monitor.result(),
        **placement(result.traces),
    }


def placement(traces: list[TaskTrace]) -> dict[str, Any]:
    """Where a stage's tasks ran, how busy they kept the workers, and any device phases."""
    busy = [t.end - t.start for t in traces]
    phases: Counter[str] = Counter()
    for trace in traces:
        phases.update(trace.phases or {})
    devices = Counter(t.device for t in traces if t.device)
    return {
        **({"phases": dict(phases), "devices_used": dict(devices)} if devices else {}),
        "workers_used": dict(Counter(t.worker for t in traces)),
        "nodes_used": dict(Counter(t.node for t in traces)),
        "busy_s": sum(busy),
        "task_max_s": max(busy, default=0.0),
        "span_s": (max(t.end for t in traces) - min(t.start for t in traces)) if traces else 0.0,
    }


def _base_record(
    job: JobSpec,
    backend: Backend,
    session: str,
    index: int,
    warmup: bool,
    labels: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "format": RECORD_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "run_id": new_id(),
        "session": session,
        "time": now(),
        "job": {**job.to_dict(), "digest": job.digest},
        "backend": asdict(backend.info()),
        "repeat": index,
        "warmup": warmup,
        "status": "running",
        "error": None,
        "wall_s": None,
        "stages": [],
        "labels": dict(labels or {}),
        "environment": environment(),
    }


def skipped_record(
    job: JobSpec,
    backend: Backend,
    problems: list[str],
    *,
    session: str,
    labels: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of a sweep point that was not timed, because its pre-flight found problems.

    Writing it keeps the results file honest about what a sweep left out, and why.
    """
    record = _base_record(job, backend, session, 0, False, labels)
    record.update(status="skipped", error="; ".join(problems))
    return record
